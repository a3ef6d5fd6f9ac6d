"""The import graph between the top-level packages runs one way: the product (training_job,
handlers, contract) never imports the local emulator (local_aws); local_aws may import the
product. The product's one way to the emulator is training_job/local_mode.py, which names
local_aws modules as strings for `--mode local`. Read from the source (ast), so an import
inside a function counts as much as one at the top."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from training_job import local_mode
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
    assert set(local_mode.BACKENDS.values()) == {"local_aws.training", "local_aws.endpoint.daemon"}


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


def test_a_missing_backend_is_a_command_error_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the emulator is not installed (a product-only install), `--mode local` says so."""
    monkeypatch.setitem(local_mode.BACKENDS, "train", "local_aws.no_such_backend")
    with pytest.raises(CommandError, match=r"--mode local needs the local AWS"):
        local_mode.backend("train")


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
