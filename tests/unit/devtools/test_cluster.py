"""The cluster replay's pure parts: its environment, the Celery workers it starts, what it removes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from include.devtools import cluster, duckdb_s3, local_airflow
from include.mlops.core.settings import PROJECT_ROOT, load_settings

DATABASES = {
    role: f"postgresql://postgres@127.0.0.1:5432/mlops_{role}_0123456789" for role in cluster.DATABASE_ROLES
}
BUCKETS = {kind: f"mlops-{kind}-0123456789" for kind in cluster.BUCKETS}


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("cluster") / "home"
    return cluster.cluster_env(
        home, DATABASES, BUCKETS, "http://127.0.0.1:9000", "redis://127.0.0.1:6379/3", "http://127.0.0.1:5005"
    )


def test_the_environment_selects_the_cluster_backends_through_settings_only(env) -> None:
    s = load_settings(env)
    assert s.is_cluster
    assert s.lake_url == "s3://mlops-lake-0123456789"
    assert s.landing_url.startswith("s3://") and s.reports_url.startswith("s3://")
    assert s.quarantine_url.startswith("s3://")
    assert s.mlflow_tracking_uri == "http://127.0.0.1:5005"
    assert s.mlflow_artifact_url.startswith("mlflow-artifacts:")
    assert s.feast_registry == DATABASES["feast"]
    assert s.lock_database_url == DATABASES["lock"]
    assert s.redis_url == "redis://127.0.0.1:6379/3"
    assert s.training_queue == cluster.TRAINING_QUEUE


def test_airflow_runs_on_postgresql_with_the_celery_executor(env) -> None:
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"].startswith("postgresql+psycopg_async://")
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/3"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == f"db+{DATABASES['airflow']}"
    assert env["PYTHONPATH"].split(":")[0] == str(PROJECT_ROOT)


def test_the_landing_sensors_connection_points_at_the_s3_server(env) -> None:
    import json

    conn = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])
    assert conn["conn_type"] == "aws"
    assert conn["extra"]["endpoint_url"] == "http://127.0.0.1:9000"


def test_a_local_executor_home_starts_only_airflows_components(tmp_path) -> None:
    env = {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
    assert list(local_airflow.components(env)) == list(local_airflow.COMPONENTS)


def test_a_celery_home_starts_a_worker_per_queue_list(env) -> None:
    commands = local_airflow.components(env)
    workers = {name: argv for name, argv in commands.items() if name.startswith("celery-worker-")}
    assert set(commands) == {*local_airflow.COMPONENTS, *workers}
    queues = {name: argv[argv.index("--queues") + 1] for name, argv in workers.items()}
    assert queues == {"celery-worker-1": "default", "celery-worker-2": "default,training"}
    pids = {argv[argv.index("--pid") + 1] for argv in workers.values()}
    assert len(pids) == 2, "each worker keeps its own PID file"
    assert all("--skip-serve-logs" in argv for argv in workers.values())


def test_only_a_worker_records_its_own_name_as_the_task_hostname(env, monkeypatch) -> None:
    worker = local_airflow.component_env("celery-worker-2", env)
    assert worker["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == "include.devtools.local_airflow.worker_hostname"
    assert "AIRFLOW__CORE__HOSTNAME_CALLABLE" not in local_airflow.component_env("scheduler", env)
    monkeypatch.setenv(local_airflow.WORKER_NAME, "celery-worker-2")
    assert local_airflow.worker_hostname().startswith("celery-worker-2@")
    monkeypatch.delenv(local_airflow.WORKER_NAME)
    assert "@" not in local_airflow.worker_hostname()


def test_running_lists_every_recorded_component_and_ignores_celerys_own_pid_files(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    run = tmp_path / "run"
    run.mkdir()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (run / "celery-worker-1.pid").write_text(str(child.pid))
        (run / "celery-worker-1.celery.pid").write_text(str(child.pid))
        assert local_airflow.running() == {"celery-worker-1": child.pid}
    finally:
        child.kill()
        child.wait()


def test_a_database_the_project_did_not_create_is_never_dropped(tmp_path) -> None:
    # No connection is made at all when nothing recorded is the project's own.
    state = cluster.State(tmp_path / "state.json", server_url="postgresql://nobody@127.0.0.1:1/x")
    state.databases = ["postgres", "test", "mlops_airflow", "mlops_airflow_0123456789; DROP"]
    assert cluster.drop_databases(state) == []
    assert cluster.OWN_DATABASE.match("mlops_airflow_0123456789")


def test_database_urls_keep_the_servers_user_host_and_options() -> None:
    server = "postgresql://u:pw@db.example:5433/postgres?sslmode=require"  # pragma: allowlist secret
    url = cluster.database_url(server, "mlops_x")
    assert url == "postgresql://u:pw@db.example:5433/mlops_x?sslmode=require"  # pragma: allowlist secret
    assert cluster.masked(url) == "postgresql://u:***@db.example:5433/mlops_x?sslmode=require"


def test_the_state_file_round_trips(tmp_path) -> None:
    state = cluster.State(tmp_path / "c" / "state.json", server_url="postgresql://p@h/postgres")
    state.databases.append("mlops_lock_0123456789")
    state.processes["s3"] = 123
    state.save()
    again = cluster.State.load(state.path)
    assert (again.databases, again.processes) == (["mlops_lock_0123456789"], {"s3": 123})


def test_the_train_task_takes_its_queue_from_the_setting() -> None:
    code = (
        "from airflow.dag_processing.dagbag import DagBag;"
        "b = DagBag('dags/train_model.py');"
        "print(b.dags['train_model'].get_task('train').queue)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env={**__import__("os").environ, "MLOPS_TRAINING_QUEUE": "training", "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "training"
    assert load_settings({}).training_queue == "default"


def test_duckdb_reads_s3_through_the_lakes_client_when_it_cannot_fetch_httpfs(s3_bucket, monkeypatch) -> None:
    import ibis
    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.mlops import lake

    loc = lake.location(f"s3://{s3_bucket}/t/dt=2026-01-01/part.parquet")
    pq.write_table(pa.table({"a": [1, 2, 3]}), loc.path, filesystem=loc.fs)
    duckdb_s3.install()
    backend = ibis.duckdb.connect()
    assert backend.read_parquet(f"s3://{s3_bucket}/t/*/*.parquet").count().execute() == 3


def test_the_shim_folder_holds_a_sitecustomize() -> None:
    assert (Path(duckdb_s3.SITE) / "sitecustomize.py").is_file()


def test_task_figures_count_tasks_per_worker_and_leave_resumed_deferrals_out(tmp_path) -> None:
    import sqlite3

    db = tmp_path / "airflow.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE task_instance (dag_id, task_id, state, hostname, queue, scheduled_dttm, "
            "queued_dttm, start_date)"
        )

        def at(seconds: int | None) -> str | None:
            return None if seconds is None else f"2026-01-01 00:{seconds // 60:02d}:{seconds % 60:02d}"

        rows = [
            ("ingest", "land", "success", "w1@h", "default", at(0), at(1), at(3)),
            ("train_model", "train", "success", "w2@h", "training", at(0), at(2), at(6)),
            # Resumed after a deferral: scheduled and queued again after its first start.
            ("ingest", "wait", "success", "w1@h", "default", at(60), at(60), at(0)),
            ("ingest", "skipped", "skipped", None, "default", None, None, at(0)),
        ]
        conn.executemany("INSERT INTO task_instance VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    figures = cluster.task_figures(f"sqlite:///{db}")
    assert figures["task_instances"] == 3
    assert figures["per_worker"] == {"w1@h": 2, "w2@h": 1}
    assert figures["per_queue"] == {"default": 2, "training": 1}
    assert figures["training"] == [{"hostname": "w2@h", "queue": "training"}]
    assert figures["queued_to_start_s"]["count"] == 2
    assert figures["queued_to_start_s"]["max"] == 4.0
    assert figures["scheduled_to_start_s"]["median"] == 4.5
