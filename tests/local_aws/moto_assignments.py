"""Every assignment into moto in local_aws/, found by reading the source (ast): what
tests/local_aws/test_moto_patches.py checks local_aws/moto_patches.py's listing against.

An assignment into moto is an assignment (`=`, an augmented one, `setattr`) whose target is
an attribute of, or an item in, a moto object: a name imported from moto, or a local name
given one (a name or attribute chain of one, or what a module function returning one
returns: `backend = _backend_class()`). An object made by calling one of moto's classes is
data, not moto's code: assignments into it are not patches.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

COMPUTED = "<computed>"  # a setattr whose attribute name the source does not spell out


@dataclass(frozen=True)
class Assignment:
    installer: str  # the module function it is in: "local_aws.iam_enforcement.answer_refusals"
    target: str  # the moto object assigned: "moto.core.responses.BaseResponse.call_action"
    line: int


def _own_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """The nodes of `node`'s own body, not those of the functions and classes it defines."""
    for child in ast.iter_child_nodes(node):
        yield child
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield from _own_nodes(child)


class _Scope:
    """The moto objects a function's names stand for, and its loops over literal names."""

    def __init__(self, node: ast.AST, outer: _Scope | None, module: ast.Module) -> None:
        self.outer, self.module = outer, module
        self.names: dict[str, str] = {}
        self.choices: dict[str, list[str]] = {}
        own = list(_own_nodes(node))
        for child in own:
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "moto":
                        self.names[alias.asname or "moto"] = alias.name if alias.asname else "moto"
            elif isinstance(child, ast.ImportFrom) and (child.module or "").startswith("moto"):
                for alias in child.names:
                    self.names[alias.asname or alias.name] = f"{child.module}.{alias.name}"
            elif isinstance(child, ast.For) and isinstance(child.target, ast.Name):
                names = _literal_strings(child.iter)
                if names is not None:
                    self.choices[child.target.id] = names
        for child in own:  # local names given a moto object
            if (
                isinstance(child, ast.Assign)
                and len(child.targets) == 1
                and isinstance(child.targets[0], ast.Name)
            ):
                found = self.resolve(child.value)
                if found is not None:
                    self.names[child.targets[0].id] = found

    def lookup(self, name: str) -> str | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.names:
                return scope.names[name]
            scope = scope.outer
        return None

    def literal_names(self, name: str) -> list[str] | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.choices:
                return scope.choices[name]
            scope = scope.outer
        return None

    def resolve(self, expression: ast.expr) -> str | None:
        """The dotted moto path `expression` stands for, or None."""
        if isinstance(expression, ast.Name):
            return self.lookup(expression.id)
        if isinstance(expression, ast.Attribute):
            owner = self.resolve(expression.value)
            return None if owner is None else f"{owner}.{expression.attr}"
        if (
            isinstance(expression, ast.Call)
            and isinstance(expression.func, ast.Name)
            and not expression.args
        ):
            helper = _module_function(self.module, expression.func.id)
            if helper is not None:
                returned = [n for n in ast.walk(helper) if isinstance(n, ast.Return) and n.value]
                scope = _Scope(helper, None, self.module)
                if len(returned) == 1:
                    return scope.resolve(returned[0].value)  # type: ignore[arg-type]
        return None

    def targets(self, node: ast.AST) -> Iterator[tuple[str, int]]:
        """The moto objects `node` (a statement or call) assigns into."""
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for element in target.elts if isinstance(target, ast.Tuple) else [target]:
                    owner = (
                        self.resolve(element.value)
                        if isinstance(element, ast.Attribute | ast.Subscript)
                        else None
                    )
                    if owner is None:
                        continue
                    if isinstance(element, ast.Attribute):
                        yield f"{owner}.{element.attr}", node.lineno
                    else:
                        yield f"{owner}[...]", node.lineno
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "setattr"
            and len(node.args) == 3
        ):
            owner = self.resolve(node.args[0])
            if owner is None:
                return
            name = node.args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                yield f"{owner}.{name.value}", node.lineno
            elif isinstance(name, ast.Name) and (choices := self.literal_names(name.id)):
                for choice in choices:
                    yield f"{owner}.{choice}", node.lineno
            else:
                yield f"{owner}.{COMPUTED}", node.lineno


def _literal_strings(expression: ast.expr) -> list[str] | None:
    """The strings of a literal tuple or list of strings, or None."""
    if not isinstance(expression, ast.Tuple | ast.List):
        return None
    values = [e.value for e in expression.elts if isinstance(e, ast.Constant)]
    if len(values) != len(expression.elts) or not all(isinstance(v, str) for v in values):
        return None
    return [str(value) for value in values]


def _module_function(module: ast.Module, name: str) -> ast.FunctionDef | None:
    for node in module.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


def assignments_into_moto(package: Path) -> list[Assignment]:
    """Every assignment into moto in the package's modules, with the module function that
    makes it (`<module>` for module-level code)."""
    found: list[Assignment] = []
    root = package.parent
    for path in sorted(package.rglob("*.py")):
        module = ast.parse(path.read_text(), filename=str(path))
        dotted = ".".join(path.relative_to(root).with_suffix("").parts)
        top = _Scope(module, None, module)
        for child in _own_nodes(module):
            for target, line in top.targets(child):
                found.append(Assignment(f"{dotted}.<module>", target, line))
        for child in module.body:
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                found += _scan(child, top, module, f"{dotted}.{child.name}")
    return found


def _scan(node: ast.AST, outer: _Scope, module: ast.Module, installer: str) -> list[Assignment]:
    """The assignments into moto in a function (or class) and those it defines."""
    scope = _Scope(node, outer, module)
    found: list[Assignment] = []
    for child in _own_nodes(node):
        for target, line in scope.targets(child):
            found.append(Assignment(installer, target, line))
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found += _scan(child, scope, module, installer)
    return found
