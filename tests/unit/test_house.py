"""The house rules of the production package, checked on its source (they hold or a test fails).

Production code (``include/mlops``) never leans on developer tooling, logs instead of printing,
stays in short rooms, and names each location and alias in one place only.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

import pytest

from include.mlops.core.settings import PROJECT_ROOT

if TYPE_CHECKING:
    from pathlib import Path

PACKAGE = PROJECT_ROOT / "include" / "mlops"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _name(path: Path) -> str:
    return path.relative_to(PROJECT_ROOT).as_posix()


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the string constants that are docstrings (of the module, a class, a function, a constant)."""
    ids = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            for stmt in body:
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                    ids.add(id(stmt.value))
    return ids


def _code_strings(tree: ast.Module) -> list[tuple[int, str]]:
    """String constants used as values in code: docstrings and settings' documentation left out."""
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "knob":
            skip.update(id(n) for arg in node.args for n in ast.walk(arg))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
    ]


def test_the_production_package_has_modules() -> None:
    assert len(MODULES) > 20


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_production_code_never_imports_developer_tooling(path: Path) -> None:
    for node in ast.walk(_tree(path)):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        assert not [n for n in names if n.startswith("include.devtools")], f"{_name(path)}:{node.lineno}"


@pytest.mark.parametrize("path", [p for p in MODULES if p.name != "__main__.py"], ids=_name)
def test_production_code_logs_instead_of_printing(path: Path) -> None:
    calls = [
        node.lineno
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"
    ]
    assert not calls, f"{_name(path)} prints on lines {calls}: use logging.getLogger(__name__)"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_modules_and_functions_stay_short(path: Path) -> None:
    source = path.read_text()
    assert source.count("\n") <= MAX_MODULE_LINES, f"{_name(path)} has {source.count(chr(10))} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{_name(path)}: {long}"


@pytest.mark.parametrize("path", [p for p in MODULES if p.name != "lake.py"], ids=_name)
def test_partition_paths_are_built_by_the_lake_only(path: Path) -> None:
    found = [(line, text) for line, text in _code_strings(_tree(path)) if "dt=" in text or "part-0" in text]
    assert not found, f"{_name(path)} spells partition paths: {found} (use include.mlops.lake)"


@pytest.mark.parametrize("path", [p for p in MODULES if p.name != "registry.py"], ids=_name)
def test_alias_names_are_defined_by_the_registry_only(path: Path) -> None:
    aliases = {"champion", "challenger", "previous_champion"}
    found = [(line, text) for line, text in _code_strings(_tree(path)) if text.strip("@") in aliases]
    assert not found, f"{_name(path)} spells alias names: {found} (use include.mlops.registry)"
