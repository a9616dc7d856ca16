"""DAG integrity: every DAG file imports, is documented and owned, retries, and parses cheaply.

Each DAG file is its own test case so one broken file names itself.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
HEAVY = (
    "pandas",
    "numpy",
    "pyarrow.parquet",
    "sklearn",
    "xgboost",
    "mlflow",
    "feast",
    "great_expectations",
    "evidently",
    "airflow.providers.cncf.kubernetes",
    "kubernetes",
    "boto3",
)
PARSE_BUDGET_S = 1.0


def test_there_are_dags():
    assert DAG_FILES, "dags/ holds no DAG file"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_without_errors(dagbag, path: Path):
    errors = {Path(k).name: v for k, v in dagbag.import_errors.items()}
    assert path.name not in errors, errors.get(path.name)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_one_dag_per_file_named_after_it(dagbag, path: Path):
    dag_ids = [d for d, dag in dagbag.dags.items() if Path(dag.fileloc).name == path.name]
    assert dag_ids == [path.stem]


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_is_documented_owned_tagged_and_retries(dagbag, path: Path):
    dag = dagbag.dags[path.stem]
    assert dag.doc_md and len(dag.doc_md.strip()) > 80, "the DAG needs documentation for the UI"
    assert dag.tags, "the DAG needs tags"
    for task in dag.tasks:
        assert task.owner and task.owner != "airflow", f"{task.task_id} has no owner"
        assert task.retries >= 2, f"{task.task_id} retries {task.retries} < 2"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_schedule_is_explicit(path: Path):
    tree = ast.parse(path.read_text())
    scheduled = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("dag", "DAG")
        and any(kw.arg == "schedule" for kw in node.keywords)
    ]
    assert scheduled, f"{path.name} must pass schedule= explicitly"


def _top_level_imports(tree: ast.Module) -> list[str]:
    """Imports executed when the module is imported (not those inside functions or classes)."""
    names: list[str] = []

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.Import):
                names.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                    continue
                visit(getattr(node, "body", []))
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return names


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_no_heavy_import_at_top_of_dag_file(path: Path):
    imports = _top_level_imports(ast.parse(path.read_text()))
    heavy = [name for name in imports if any(name == h or name.startswith(h + ".") for h in HEAVY)]
    assert not heavy, f"{path.name} imports {heavy} at module level: import them inside the task"


_PARSE_PROBE = """
import json, sys, time, runpy
import airflow.sdk  # the Airflow import every DAG file pays anyway
before = set(sys.modules)
start = time.process_time()  # CPU time: immune to a busy machine
runpy.run_path(sys.argv[1], run_name="dag_file")
elapsed = time.process_time() - start
print(json.dumps({"seconds": elapsed, "modules": sorted(set(sys.modules) - before)}))
"""


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_parses_fast_in_a_fresh_process_without_heavy_modules(path: Path, tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIRFLOW_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", _PARSE_PROBE, str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    loaded = [m for m in probe["modules"] if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert not loaded, f"parsing {path.name} loads heavy modules: {loaded[:10]}"
    assert probe["seconds"] < PARSE_BUDGET_S, f"{path.name} parses in {probe['seconds']:.2f}s"
