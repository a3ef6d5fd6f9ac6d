"""The fast tier (`make test-fast`: `pytest -m "not slow"`) stays fast as tests are added:
every fixture tests/conftest.py's SLOW_FIXTURES names exists, and every fixture or test that
calls something that starts a server or a browser, trains or runs the Serverless CLI is
marked `slow`, by that list (directly or through the fixtures it uses, resolved as pytest
resolves them) or by a `@pytest.mark.slow` of its own or its module's `pytestmark`. Read
from the source (ast): it sees direct calls of STARTERS only, so a test that starts one
through a helper of its own or a subprocess (test_demo.py runs `python -m training_job.demo`)
carries its mark by hand."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO_ROOT, SLOW_FIXTURES

# What starts a server or a browser, trains or runs the Serverless CLI, by the name it is
# imported under: a fixture or test that calls one is slow.
STARTERS = {
    "local_aws.server.local_aws_server": "starts a local AWS",
    "local_aws.endpoint.background.local_endpoint": "starts a local endpoint",
    "tests.browser.start_chromium": "starts Chromium",
    "tests.sample_model.train_quick_model": "trains a small model",
    "tests.rollout_stack.rollout_stack": "starts a local AWS and an endpoint, and trains",
    "tests.training_job.code.train_helpers.run_train": "runs train.py",
    "tests.statemachine.packaging.package": "runs `sls package`",
    "tests.statemachine.packaging.sls": "runs the Serverless CLI",
}


def _modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted((REPO_ROOT / "tests").rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def _is_fixture(function: ast.FunctionDef) -> bool:
    for decorator in function.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr == "fixture":
            return True
    return False


def _marks_slow(node: ast.AST) -> bool:
    return any(
        isinstance(child, ast.Attribute) and child.attr == "slow" for child in ast.walk(node)
    )


def _imported_names(module: ast.Module) -> dict[str, str]:
    """Local name -> the qualified name it was imported as, anywhere in the module."""
    names: dict[str, str] = {}
    for node in ast.walk(module):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
        elif isinstance(node, ast.Import):
            names.update({a.asname or a.name: a.name for a in node.names})
    return names


def _starters_called(function: ast.FunctionDef, imported: dict[str, str]) -> set[str]:
    called = set()
    for node in ast.walk(function):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name):
            called.add(imported.get(node.func.id, ""))
        elif isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            module = imported.get(node.func.value.id, "")
            called.add(f"{module}.{node.func.attr}")
    return called & STARTERS.keys()


def _functions(module: ast.Module) -> Iterator[ast.FunctionDef]:
    yield from (node for node in module.body if isinstance(node, ast.FunctionDef))


class Fixtures:
    """The tests' fixtures, resolved as pytest resolves a name: the requesting module's
    own, then each conftest.py from its folder up to tests/."""

    def __init__(self) -> None:
        self.defined: dict[tuple[Path, str], ast.FunctionDef] = {
            (path, function.name): function
            for path, module in _modules()
            for function in _functions(module)
            if _is_fixture(function)
        }

    def resolve(self, path: Path, name: str) -> tuple[Path, ast.FunctionDef] | None:
        folders = [path.parent, *path.parent.parents]
        candidates = [path, *(folder / "conftest.py" for folder in folders)]
        for candidate in candidates:
            if (candidate, name) in self.defined:
                return candidate, self.defined[candidate, name]
            if candidate.parent == REPO_ROOT / "tests" and candidate.name == "conftest.py":
                break
        return None

    def is_slow(self, path: Path, names: set[str], seen: frozenset[str] = frozenset()) -> bool:
        """Whether any of `names`, requested from `path`, is slow: in SLOW_FIXTURES or
        requesting a slow fixture itself."""
        for name in names - seen:
            if name in SLOW_FIXTURES:
                return True
            found = self.resolve(path, name)
            if found and self.is_slow(found[0], _arguments(found[1]), seen | {name}):
                return True
        return False


def _arguments(function: ast.FunctionDef) -> set[str]:
    return {argument.arg for argument in function.args.args}


def test_every_slow_fixture_is_a_fixture_of_the_tests() -> None:
    fixtures = {name for _, name in Fixtures().defined}
    assert set(SLOW_FIXTURES) - fixtures == set()


def test_whatever_starts_a_server_or_trains_is_out_of_the_fast_tier() -> None:
    fixtures = Fixtures()
    fast_but_starting = []
    for path, module in _modules():
        imported = _imported_names(module)
        module_slow = any(
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
            and _marks_slow(node.value)
            for node in module.body
        )
        for function in _functions(module):
            if not (_is_fixture(function) or function.name.startswith("test_")):
                continue
            starters = _starters_called(function, imported)
            marked = module_slow or any(_marks_slow(d) for d in function.decorator_list)
            names = _arguments(function) | ({function.name} if _is_fixture(function) else set())
            if starters and not (marked or fixtures.is_slow(path, names)):
                why = ", ".join(STARTERS[name] for name in sorted(starters))
                fast_but_starting.append(f"{path.relative_to(REPO_ROOT)}::{function.name}: {why}")
    assert fast_but_starting == []
