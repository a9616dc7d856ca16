"""The house rules of the production package, checked on its source (they hold or a test fails).

Production code (``include/mlops``) never leans on developer tooling, logs instead of printing,
stays in short rooms, names each location and alias in one place only; each stage package is
light to import, depends one way, shares no private names and shows one documented public face.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
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


# --------------------------------------------------------------------------------------------------
# Each stage package: light to import, one-way dependencies, one public face, documented.

STAGES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # stage: (what it may import from include.mlops, heavy libraries its import must not load)
    "ingest": (("core", "lake"), ("pandas", "great_expectations")),
    "features": (("core", "lake"), ("pandas", "duckdb", "feast", "great_expectations")),
    "training": (
        ("core", "lake", "registry", "features"),
        ("pandas", "sklearn", "xgboost", "mlflow", "feast"),
    ),
    "promotion": (("core", "lake", "registry", "features", "training"), ("pandas", "mlflow", "xgboost")),
    "monitoring": (("core", "lake", "registry"), ("pandas", "mlflow", "evidently")),
    "serving": (
        ("core", "lake", "registry", "features"),
        ("pandas", "mlflow", "feast", "fastapi", "xgboost"),
    ),
    "ops": (("core", "lake", "registry"), ("pandas", "mlflow", "evidently", "prometheus_client")),
}
STAGE_MODULES = [
    (stage, path)
    for stage in STAGES
    for path in sorted((PACKAGE / stage).glob("*.py"))
    if path.name != "__init__.py"
]

FEAST_PLUGINS = {"online_stores.py", "arrow_write.py", "offline_store.py", "asof.py"}
"""Modules Feast imports by the class path in ``feature_repo/feature_store*.yaml``: their public
names (a store or an engine and its config class, and their helpers) are Feast's interface, not the
package's, and they import Feast."""


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every import of the module, at any depth."""
    found = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name, []) for a in node.names)
    return found


def _public(path: Path) -> set[str]:
    """The public names a module defines at its top level (functions, classes, constants)."""
    names = set()
    for node in _tree(path).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            names.update(e.id for t in node.targets if isinstance(t, ast.Tuple) for e in t.elts)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_") and n != "logger"}


@pytest.mark.parametrize("stage", STAGES)
def test_importing_a_stage_loads_no_heavy_library(stage: str) -> None:
    heavy = STAGES[stage][1]
    code = f"import sys, include.mlops.{stage}; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"importing include.mlops.{stage} loads {done.stdout.strip()}"


@pytest.mark.parametrize(("stage", "path"), STAGE_MODULES, ids=lambda x: getattr(x, "name", x))
def test_stages_depend_one_way_and_share_no_private_names(stage: str, path: Path) -> None:
    allowed = tuple(f"include.mlops.{name}" for name in (*STAGES[stage][0], stage))
    for line, module, names in _imports(path):
        if not module.startswith("include"):
            continue
        targets = [f"{module}.{n}" for n in names] if module == "include.mlops" else [module]
        wrong = [t for t in targets if not t.startswith(allowed)]
        assert not wrong, f"{_name(path)}:{line} imports {wrong}"
        private = [n for n in names if n.startswith("_")]
        assert not private, f"{_name(path)}:{line} imports {private} from {module}"


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_package_lists_every_public_name_of_its_modules(stage: str) -> None:
    package = importlib.import_module(f"include.mlops.{stage}")
    modules = [path for name, path in STAGE_MODULES if name == stage and path.name not in FEAST_PLUGINS]
    assert set(package.__all__) == set().union(*(_public(p) for p in modules))
    for path in modules:
        module = importlib.import_module(f"include.mlops.{stage}.{path.stem}")
        for name in _public(path):
            assert getattr(package, name) is getattr(module, name), f"{stage}.{name}"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_every_public_function_and_class_is_documented(path: Path) -> None:
    undocumented = [
        node.name
        for node in _tree(path).body
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
        and not node.name.startswith("_")
        and not ast.get_docstring(node)
    ]
    assert not undocumented, f"{_name(path)}: {undocumented}"
