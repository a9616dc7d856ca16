"""The lifecycle on the cluster profile: real services on loopback, CeleryExecutor workers.

The services of ``make demo-cluster`` (:mod:`include.devtools.cluster`): Airflow on PostgreSQL with
two Celery workers (Redis broker, PostgreSQL results), the second one also serving the training
queue; an S3 server (moto) for the landing zone, the lake, the reports and the quarantine; an
MLflow tracking server on PostgreSQL with artifacts on S3; Feast with its registry on PostgreSQL
and its online store on Redis; the promotion lock a PostgreSQL advisory lock. A short replay
(6 scored days, drift from the 4th of them, a bad drop on day 1) through the same
``replay.run_pipeline`` as the demo, with the same outcomes as the embedded tier
(``test_lifecycle.py``), plus: the tasks ran on the Celery workers, training on the training
queue, the champion is in the tracking server's registry, the online features in Redis, the lake
in S3, and nothing of the run was written under ``MLOPS_HOME`` but logs and the staged input.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from include.devtools import cluster as cluster_module
from include.devtools import demo as demo_module
from include.devtools import local_airflow
from include.devtools import replay as replay_module
from include.devtools.airflow_api import AirflowClient
from tests.conftest import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

# 16 days: the first model as of day 10 (4 fully labelled days behind it), days 11..16 scored,
# drift from day 14 (the 4th scored day), a bad transactions drop on day 1. The window starts on
# the day test_lifecycle.py's does, with its seed and day size: the days before the drift are the
# same simulated days, so the first model is the one that tier proves promotable.
TODAY = dt.date(2026, 2, 24)
DAYS, ROWS, DRIFT_DAY, FIRST_TRAINING_DAY, SEED = 16, 6000, 14, 10, 11
PLAN = demo_module.plan(
    DAYS, ROWS, DRIFT_DAY, SEED, TODAY, first_training_day=FIRST_TRAINING_DAY, nightly=False
)
PLAN.train_window_days, PLAN.oot_days = 3, 1

# Small days carry few frauds: the floors are lowered so the mechanism, not the model, is tested.
STACK_ENV = {
    "MLOPS_TRAIN_CRON": PLAN.cron,
    "MLOPS_SENSOR_POKE_SECONDS": "3",
    "MLOPS_PROMOTION_MIN_PR_AUC": "0.05",
    "MLOPS_PROMOTION_MIN_RECALL_AT_1PCT_FPR": "0.0",
    "MLOPS_PROMOTION_BOOTSTRAP": "200",
    "MLOPS_DRIFT_MIN_POSITIVES": "5",
    "MLOPS_DRIFT_RETRAIN_LABELLED_DAYS": "3",
    "MLOPS_DRIFT_RETRAIN_OOT_DAYS": "1",
    "MLOPS_DRIFT_RETRAIN_WINDOW_DAYS": "8",
    "MLOPS_SEED": str(SEED),
}
LOCAL_KEEP = {"simulated", "airflow", "cluster", "alerts", "cache"}
"""What the run may leave under MLOPS_HOME: the staged input, Airflow's and the servers' logs (and
its runtime records: PID files, generated secrets), the alert log, and the drift monitor's download
cache of each champion's reference sample (a copy of an MLflow artifact, kept by the worker)."""
NOT_DATA = {"simulated", "cache"}


@pytest.fixture(scope="module")
def cluster_replay(postgres_url, redis_url, tmp_path_factory):
    """The services up, Airflow on them, the plan replayed; yields what the tests look at."""
    try:
        cluster_module.check_dependencies()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    home = tmp_path_factory.mktemp("cluster") / "home"
    base = {"MLOPS_HOME": str(home), "MLOPS_AIRFLOW_PORT": str(free_port()), **STACK_ENV}
    with (
        cluster_module.applied(base),
        cluster_module.services(home, postgres_url, redis_url) as c,
        cluster_module.applied({**c.env, **base}),
    ):
        try:
            local_airflow.up()
            client = AirflowClient(local_airflow.base_url(), local_airflow.USER, local_airflow.password())
            staging = str(home / "simulated")
            lines: list[str] = []
            demo_module.stage(PLAN, staging, log=lines.append)
            tracker = replay_module.run_pipeline(
                PLAN, client, staging, c.env["MLOPS_LANDING_URL"], timeout=1500, log=lines.append
            )
            yield c, tracker, lines
            # Figures for the record (`pytest -s` shows them): tasks per worker, queue latency.
            print(json.dumps(cluster_module.task_figures(c.databases["airflow"]), indent=2))
        finally:
            local_airflow.down()


def _task_instances(c) -> list[dict]:
    import sqlalchemy

    url = c.databases["airflow"].replace("postgresql://", "postgresql+psycopg2://", 1)
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.text(
                    "SELECT dag_id, task_id, state, hostname, queue FROM task_instance "
                    "WHERE start_date IS NOT NULL AND state <> 'skipped'"
                )
            )
            return [dict(r._mapping) for r in rows]
    finally:
        engine.dispose()


def _s3_keys(c, bucket: str) -> list[str]:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=c.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=c.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=c.env["AWS_SECRET_ACCESS_KEY"],
    )
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def test_every_good_day_reaches_every_store_on_s3_and_the_bad_drop_is_quarantined(cluster_replay):
    c, tracker, lines = cluster_replay
    assert demo_module.failures(PLAN, tracker) == [], "\n".join(lines[-40:])
    bad = PLAN.bad_day.isoformat()
    lake = set(_s3_keys(c, c.buckets["lake"]))
    for key in PLAN.keys:
        assert (f"transactions/dt={key}/part-00000.parquet" in lake) == (key != bad), key
        assert f"labels/dt={key}/part-00000.parquet" in lake, key
        if key != bad:
            assert f"features/customer/dt={key}/part-00000.parquet" in lake, key
    for key in PLAN.scored_keys:
        assert f"predictions/dt={key}/part-00000.parquet" in lake, key
    reports = set(_s3_keys(c, c.buckets["reports"]))
    for key in PLAN.scored_keys:
        assert f"drift/dt={key}/verdict.json" in reports, key
    states = tracker.states("ingest_transactions", PLAN.keys)
    assert states[bad] == "failed"
    assert {s for k, s in states.items() if k != bad} == {"success"}
    assert f"transactions/dt={bad}/rejection.json" in set(_s3_keys(c, c.buckets["quarantine"]))


def test_a_champion_serves_from_the_tracking_servers_registry(cluster_replay):
    from include.mlops import registry

    c, _tracker, _ = cluster_replay
    query = urllib.parse.urlencode({"name": "card_fraud", "alias": registry.CHAMPION})
    with urllib.request.urlopen(f"{c.mlflow_url}/api/2.0/mlflow/registered-models/alias?{query}") as resp:
        version = json.loads(resp.read())["model_version"]
    assert int(version["version"]) >= 1
    assert version["source"].startswith(("mlflow-artifacts:", "models:")), version["source"]
    # Every scored day names the champion of its day; the first is this one or an earlier one.
    assert c.env["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:")
    assert any(k.startswith("mlops/") for k in _s3_keys(c, c.buckets["mlflow"])), "artifacts on S3"


def test_drift_requested_a_retrain(cluster_replay):
    _c, tracker, lines = cluster_replay
    reasons = [(r.get("conf") or {}).get("reason", "") for r in tracker.runs("train_model")]
    assert any(r.startswith("drift on ") for r in reasons), (reasons, lines[-30:])


def test_tasks_ran_on_the_celery_workers_and_training_on_the_training_queue(cluster_replay):
    c, _tracker, _ = cluster_replay
    tis = _task_instances(c)
    assert tis
    workers = {ti["hostname"].partition("@")[0] for ti in tis}
    assert workers == {"celery-worker-1", "celery-worker-2"}, workers
    trains = [ti for ti in tis if (ti["dag_id"], ti["task_id"]) == ("train_model", "train")]
    assert trains and all(t["state"] == "success" for t in trains), trains
    assert {t["queue"] for t in trains} == {cluster_module.TRAINING_QUEUE}
    # Only the second worker serves the training queue.
    assert {t["hostname"].partition("@")[0] for t in trains} == {"celery-worker-2"}
    assert {ti["queue"] for ti in tis if ti["task_id"] != "train"} == {"default"}


def test_online_features_are_in_redis(cluster_replay):
    import redis

    c, _tracker, _ = cluster_replay
    client = redis.Redis.from_url(c.redis_url)
    try:
        feast_keys = [k for k in client.scan_iter(count=1000) if k.endswith(b"card_fraud")]
    finally:
        client.close()
    assert len(feast_keys) > 100


def test_nothing_but_logs_and_the_staged_input_is_written_under_mlops_home(cluster_replay):
    c, _tracker, _ = cluster_replay
    home = Path(c.home)
    assert {p.name for p in home.iterdir()} <= LOCAL_KEEP, sorted(p.name for p in home.iterdir())
    data = [
        p
        for p in home.rglob("*")
        if p.is_file()
        and not NOT_DATA & set(p.relative_to(home).parts)
        and p.suffix in {".parquet", ".csv", ".db", ".sqlite", ".json", ".html"}
        and p.name not in {"passwords.json", "prepared.json", "state.json"}
    ]
    assert data == [], data[:10]
