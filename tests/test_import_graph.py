"""The import graph between the top-level packages runs one way: the product (training_job,
handlers, contract) never imports the local emulator (local_aws); local_aws may import the
product. The product's one way to the emulator is training_job/local_mode.py, which names
local_aws modules as strings for `--mode local` and the demo. Module by module: no cycle
anywhere, and the emulator imports no command module (a command's options, prints and exit
codes are not an API). Read from the source (ast), so an import inside a function counts
as much as one at the top."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from training_job import local_mode
from training_job.__main__ import COMMANDS
from training_job.errors import CommandError

PRODUCT = ("training_job", "handlers", "contract")
EMULATOR = "local_aws"
PACKAGES = (*PRODUCT, EMULATOR)
SEAM = REPO_ROOT / "training_job" / "local_mode.py"
_MODULE_NAME = re.compile(rf"^{EMULATOR}(\.\w+)*$")


def _imported_modules(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _sources(package: str) -> list[Path]:
    return sorted((REPO_ROOT / package).rglob("*.py"))


def package_graph() -> dict[str, set[str]]:
    """Top-level package -> the other top-level packages its modules import."""
    graph: dict[str, set[str]] = {package: set() for package in PACKAGES}
    for package in PACKAGES:
        for path in _sources(package):
            for module in _imported_modules(ast.parse(path.read_text(), str(path))):
                top = module.split(".")[0]
                if top in PACKAGES and top != package:
                    graph[package].add(top)
    return graph


def test_the_product_imports_no_emulator_module() -> None:
    offenders = [
        f"{path.relative_to(REPO_ROOT)} imports {module}"
        for package in PRODUCT
        for path in _sources(package)
        for module in sorted(_imported_modules(ast.parse(path.read_text(), str(path))))
        if module.split(".")[0] == EMULATOR
    ]
    assert offenders == []


def test_only_the_seam_names_emulator_modules() -> None:
    """An `importlib.import_module("local_aws...")` elsewhere would be an import by another
    name: module names of local_aws appear as strings in the seam only."""
    named = [
        f"{path.relative_to(REPO_ROOT)}: {node.value}"
        for package in PRODUCT
        for path in _sources(package)
        if path != SEAM
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and _MODULE_NAME.match(node.value)
    ]
    assert named == []
    assert set(local_mode.BACKENDS.values()) == {
        "local_aws.training",
        "local_aws.endpoint.daemon",
        "local_aws.server",
        "local_aws.supervisor",
    }


def test_no_cycle_between_top_level_packages() -> None:
    graph = package_graph()
    assert EMULATOR not in set().union(*(graph[package] for package in PRODUCT)), graph
    # Depth-first search for a back edge: any cycle, not only through local_aws.
    state: dict[str, str] = {}

    def visit(package: str, path: list[str]) -> None:
        state[package] = "open"
        for other in sorted(graph[package]):
            assert state.get(other) != "open", f"cycle: {' -> '.join([*path, other])}"
            if other not in state:
                visit(other, [*path, other])
        state[package] = "done"

    for package in PACKAGES:
        if package not in state:
            visit(package, [package])


def test_the_seams_backends_exist_and_provide_what_the_commands_call() -> None:
    train = local_mode.backend("train")
    deploy = local_mode.backend("deploy")
    assert callable(train.run)
    assert callable(deploy.add_arguments) and callable(deploy.start) and callable(deploy.stop)
    # What the demo (training_job/demo/) uses to start the local AWS and to name a refusal.
    server = local_mode.backend("local-aws")
    assert isinstance(server.DEFAULT_PORT, int) and isinstance(server.DEFAULT_ENDPOINT_PORT, int)
    for name in ("client_environment", "endpoint_url", "wait_until_ready", "local_aws_server"):
        assert callable(getattr(server, name)), name
    assert callable(server.free_port)
    assert issubclass(local_mode.backend("supervisor").SupervisorError, Exception)


def test_a_missing_backend_is_a_command_error_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the emulator is not installed (a product-only install), `--mode local` says so."""
    monkeypatch.setitem(local_mode.BACKENDS, "train", "local_aws.no_such_backend")
    with pytest.raises(CommandError, match=r"--mode local needs the local AWS"):
        local_mode.backend("train")


# -- module level ------------------------------------------------------------------------


def module_name(path: Path) -> str:
    """training_job/models/registry.py -> training_job.models.registry (a package's
    __init__.py is the package)."""
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports: `from package import name` is an import of
    package.name where that is a module, else of package."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                package = module_name(path).split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                base = ".".join([*package[: len(package) - node.level + 1], *filter(None, [base])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                names.add(submodule if submodule in modules else base)
    return names & modules


def module_graph() -> dict[str, set[str]]:
    """Each module of the four packages -> the modules of the four packages it imports."""
    paths = {module_name(path): path for package in PACKAGES for path in _sources(package)}
    modules = set(paths)
    return {name: _imports_of(path, modules) - {name} for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as its modules in import order (the first repeated at the
    end), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for other in sorted(graph[node]):
            if state.get(other) == "open":
                return [*stack[stack.index(other) :], other]
            if other not in state and (cycle := visit(other)) is not None:
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_no_cycle_between_modules() -> None:
    """Two modules that import each other (even inside a function) cannot be read, tested
    or moved one without the other."""
    cycle = find_cycle(module_graph())
    assert cycle is None, f"module cycle: {' -> '.join(cycle or [])}"


def test_the_cycle_finder_names_a_cycles_modules() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def command_modules() -> set[str]:
    """The modules that are a command: every module of the command table, the entry point,
    and the model registry (the `models` command's store, which registers, approves and
    deploys versions)."""
    return {*COMMANDS.values(), "training_job.__main__", "training_job.models.registry"}


def test_the_emulator_imports_no_command_module() -> None:
    """local_aws depends on contract/ and on small product modules named for what they
    offer, never on a command: a command's options, prints and exit codes are not an API."""
    commands = command_modules()
    offenders = [
        f"{module} imports {imported}"
        for module, imported_modules in sorted(module_graph().items())
        if module.split(".")[0] == EMULATOR
        for imported in sorted(imported_modules & commands)
    ]
    assert offenders == []


def test_the_command_modules_exist() -> None:
    """The list the emulator test checks against names real modules (a renamed command
    module would otherwise leave the test checking nothing)."""
    assert command_modules() <= set(module_graph())


def _imported_test_modules(path: Path) -> set[str]:
    """The tests' `test_*.py` modules `path` imports, however it names them: `import
    tests.a.test_b`, `from tests.a.test_b import x`, `from tests.a import test_b`,
    `from .test_b import x`."""
    package = path.relative_to(REPO_ROOT).parent.parts
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join((*base, *(node.module or "").split("."))).strip(".")
            named.add(module)
            named.update(f"{module}.{alias.name}" for alias in node.names)
    return {
        name
        for name in named
        if name.rsplit(".", 1)[-1].startswith("test_")
        and (REPO_ROOT / f"{name.replace('.', '/')}.py").is_file()
    }


def test_no_module_of_the_tests_imports_a_test_module() -> None:
    """What tests share lives in a conftest.py (fixtures) or a helper module (functions,
    constants), never in a test module: a test module imported elsewhere cannot be moved,
    renamed or trimmed without breaking tests it does not show, and a fixture imported by
    name is a second fixture of its own, hidden behind `noqa` markers."""
    offenders = [
        f"{path.relative_to(REPO_ROOT)} imports {module}"
        for path in sorted((REPO_ROOT / "tests").rglob("*.py"))
        for module in sorted(_imported_test_modules(path))
    ]
    assert offenders == []
