"""The ingest package's shape: light to import, one-way dependencies, one public face."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys

import pytest

import include.mlops.ingest as ingest
from include.mlops.core.settings import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "include" / "mlops" / "ingest"
MODULES = sorted(p for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
ALLOWED = ("include.mlops.core", "include.mlops.lake", "include.mlops.ingest")


def _imports(path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every import of the module, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name, []) for a in node.names)
    return found


def _defined(path) -> set[str]:
    """The public names a module defines at its top level (functions, classes, constants)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_") and n != "logger"}


def test_importing_the_package_loads_no_heavy_library() -> None:
    code = (
        "import sys, include.mlops.ingest; "
        "print(','.join(m for m in ('pandas', 'duckdb', 'feast', 'great_expectations') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == ""


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_ingest_depends_only_on_core_and_the_lake(path) -> None:
    for line, module, names in _imports(path):
        if not module.startswith("include"):
            continue
        targets = [f"{module}.{n}" for n in names] if module == "include.mlops" else [module]
        wrong = [t for t in targets if not t.startswith(ALLOWED)]
        assert not wrong, f"{path.name}:{line} imports {wrong}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_private_name_crosses_modules(path) -> None:
    for line, module, names in _imports(path):
        if module.startswith("include"):
            private = [n for n in names if n.startswith("_")]
            assert not private, f"{path.name}:{line} imports {private} from {module}"


def test_the_public_face_lists_every_public_name_of_its_modules() -> None:
    public = set().union(*(_defined(p) for p in MODULES))
    assert set(ingest.__all__) == public
    for path in MODULES:
        module = importlib.import_module(f"include.mlops.ingest.{path.stem}")
        for name in _defined(path):
            assert getattr(ingest, name) is getattr(module, name), name


def test_every_public_function_and_class_is_documented() -> None:
    undocumented = [
        f"{path.name}:{node.name}"
        for path in MODULES
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
        and not node.name.startswith("_")
        and not ast.get_docstring(node)
    ]
    assert not undocumented
