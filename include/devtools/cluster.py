"""The cluster profile on real services, on loopback: ``make demo-cluster``.

The same replay as ``make demo`` (:mod:`include.devtools.demo`), with every backend a server:

* **PostgreSQL**: a database of this run's own (unique names) for Airflow's metadata (and Celery's
  results), MLflow's backend store, Feast's SQL registry and the promotion lock (an advisory
  lock); dropped at the end, and never one this module did not create;
* **Redis**: an empty logical database for Feast's online store and Celery's broker;
* **S3**: moto's S3 API server on a free port, with buckets for the landing zone, the lake,
  the reports, the quarantine and MLflow's artifacts;
* **MLflow**: ``mlflow server`` on PostgreSQL, proxying artifacts to S3, so tasks reach MLflow
  over HTTP only (``MLFLOW_TRACKING_URI=http://...``);
* **Airflow** (:mod:`include.devtools.local_airflow`) on its PostgreSQL database with the
  CeleryExecutor: API server, scheduler, DAG processor, triggerer and two Celery workers, one
  serving ``default``, the other ``default,training`` (the ``train`` task's queue,
  ``MLOPS_TRAINING_QUEUE``).

Every credential and address reaches the processes through one environment, built here
(:func:`cluster_env`); the pipeline's code is the same as in the embedded profile, its settings
select the backends. Each server runs in its own process group, recorded with the databases in
``$MLOPS_HOME/cluster/state.json``; at the end (or with ``--down`` after ``--keep-up``) they are
stopped and the databases dropped. Under ``MLOPS_HOME`` only logs are written (and the
simulator's staging folder, the replay's input).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from include.devtools import duckdb_s3, local_airflow
from include.mlops.core.settings import PROJECT_ROOT

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

DATABASE_ROLES = ("airflow", "mlflow", "feast", "lock")
"""The PostgreSQL databases a run creates, by what they hold."""
BUCKETS = ("landing", "lake", "reports", "quarantine", "mlflow")
"""The S3 buckets a run creates, by what they hold."""
WORKERS = "default;default,training"
"""Two Celery workers: the second one also serves the training queue."""
TRAINING_QUEUE = "training"
OWN_DATABASE = re.compile(r"^mlops_[a-z]+_[0-9a-f]{10}$")
"""The names this module gives its databases: the only ones it ever drops."""
TEST_CREDENTIALS = {
    # moto accepts any key; these name no real account.
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # pragma: allowlist secret (moto's test value)
    "AWS_DEFAULT_REGION": "us-east-1",
}

logger = logging.getLogger(__name__)


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``, for a log line."""
    return re.sub(r"(://[^:/@]+:)[^@/]+@", r"\1***@", url)


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url(server_url: str, name: str) -> str:
    """The URL of database ``name`` on the server of ``server_url`` (same user, host and options)."""
    base, _, rest = server_url.partition("?")
    return f"{base.rpartition('/')[0]}/{name}" + (f"?{rest}" if rest else "")


# --------------------------------------------------------------------------------------------------
# State: what this run created, so that only that is removed


@dataclass
class State:
    """What a run created (``$MLOPS_HOME/cluster/state.json``): databases, Redis keys, processes."""

    path: Path
    server_url: str = ""
    databases: list[str] = field(default_factory=list)
    redis_url: str = ""
    processes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> State:
        values = json.loads(path.read_text()) if path.is_file() else {}
        return cls(path, **values)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        values = {k: getattr(self, k) for k in ("server_url", "databases", "redis_url", "processes")}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(values, indent=2))
        os.replace(tmp, self.path)


def create_databases(state: State, server_url: str, run: str) -> dict[str, str]:
    """Create this run's databases (:data:`DATABASE_ROLES`); their URLs by role. Each is recorded
    in ``state`` as soon as it exists, so a failure later still drops it."""
    import psycopg2

    state.server_url = server_url
    urls = {}
    conn = psycopg2.connect(server_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for role in DATABASE_ROLES:
                name = f"mlops_{role}_{run}"
                cur.execute(f'CREATE DATABASE "{name}"')
                state.databases.append(name)
                state.save()
                urls[role] = database_url(server_url, name)
    finally:
        conn.close()
    return urls


def drop_databases(state: State) -> list[str]:
    """Drop the databases ``state`` records as created by this module (and no other); their names."""
    import psycopg2

    own = [n for n in state.databases if OWN_DATABASE.match(n)]
    if not own:
        return []
    conn = psycopg2.connect(state.server_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in own:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()
    state.databases = [n for n in state.databases if n not in own]
    state.save()
    return own


def empty_redis_database(server_url: str) -> str:
    """A Redis URL on an empty logical database of the server (1..15), so that this run's keys
    (Feast's online store, Celery's queues) meet no other's."""
    from urllib.parse import urlparse, urlunparse

    import redis

    parsed = urlparse(server_url)
    for db in range(1, 16):
        url = urlunparse(parsed._replace(path=f"/{db}"))
        client = redis.Redis.from_url(url)
        try:
            if client.dbsize() == 0:
                return url
        finally:
            client.close()
    raise RuntimeError(f"no empty logical database on the Redis server {masked(server_url)}")


def clear_redis(state: State) -> int:
    """Delete every key of the run's Redis database (it was empty when the run took it)."""
    import redis

    if not state.redis_url:
        return 0
    client = redis.Redis.from_url(state.redis_url)
    try:
        keys = list(client.scan_iter())
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


# --------------------------------------------------------------------------------------------------
# Processes


def start_process(state: State, name: str, argv: list[str], env: dict[str, str], logs: Path) -> int:
    """Start ``argv`` in a process group of its own, output to ``logs/<name>.log``; its PID."""
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=logs,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    state.processes[name] = proc.pid
    state.save()
    return proc.pid


def stop_processes(state: State, timeout: float = 30.0) -> list[str]:
    """Stop the process groups ``state`` records (SIGTERM, then SIGKILL after ``timeout``)."""
    stopped = []
    for name, pid in state.processes.items():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
            stopped.append(name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(local_airflow._alive(p) for p in state.processes.values()):
        time.sleep(0.5)
    for pid in state.processes.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    state.processes = {}
    state.save()
    return stopped


def wait_http(url: str, pid: int, what: str, log: Path, timeout: float = 120.0) -> None:
    """Poll ``url`` until it answers 200; fail early if ``pid`` exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(url, timeout=5) as resp,
        ):
            if resp.status == 200:
                return
        if not local_airflow._alive(pid):
            raise RuntimeError(f"{what} exited; see {log}")
        time.sleep(0.5)
    raise TimeoutError(f"{what} did not answer {url} in {timeout:.0f}s; see {log}")


def start_s3(state: State, env: dict[str, str], logs: Path) -> str:
    """Start moto's S3 API server on a free loopback port; its endpoint URL."""
    port = free_port()
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    pid = start_process(state, "s3", [moto, "-H", "127.0.0.1", "-p", str(port)], env, logs)
    endpoint = f"http://127.0.0.1:{port}"
    wait_http(f"{endpoint}/moto-api/", pid, "the S3 server", logs / "s3.log", timeout=60)
    return endpoint


def create_buckets(endpoint: str, run: str) -> dict[str, str]:
    """Create this run's buckets (:data:`BUCKETS`) on the S3 server; their names by kind."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=TEST_CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    names = {kind: f"mlops-{kind}-{run}" for kind in BUCKETS}
    for name in names.values():
        client.create_bucket(Bucket=name)
    return names


def start_mlflow(state: State, backend_url: str, artifacts: str, env: dict[str, str], logs: Path) -> str:
    """Start ``mlflow server`` on PostgreSQL, proxying artifacts to ``artifacts`` (S3); its URL."""
    port = free_port()
    argv = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_url,
        "--artifacts-destination", artifacts,
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    pid = start_process(state, "mlflow-server", argv, env, logs)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", pid, "the MLflow server", logs / "mlflow-server.log", timeout=180)
    return url


# --------------------------------------------------------------------------------------------------
# The cluster


@dataclass
class Cluster:
    """A running set of services and the environment that points the pipeline at them."""

    home: Path
    run: str
    env: dict[str, str]
    databases: dict[str, str]
    buckets: dict[str, str]
    s3_endpoint: str
    redis_url: str
    mlflow_url: str
    state: State


def cluster_env(
    home: Path,
    databases: dict[str, str],
    buckets: dict[str, str],
    s3_endpoint: str,
    redis_url: str,
    mlflow_url: str,
) -> dict[str, str]:
    """The one environment every process of the run gets: settings, credentials, Airflow's config."""
    airflow_db = databases["airflow"]
    env = {
        **TEST_CREDENTIALS,
        "MLOPS_HOME": str(home),
        "MLOPS_PROFILE": "cluster",
        "MLOPS_LANDING_URL": f"s3://{buckets['landing']}",
        "MLOPS_LAKE_URL": f"s3://{buckets['lake']}",
        "MLOPS_REPORTS_URL": f"s3://{buckets['reports']}",
        "MLOPS_QUARANTINE_URL": f"s3://{buckets['quarantine']}",
        "MLOPS_S3_ENDPOINT_URL": s3_endpoint,
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        # The landing sensors' S3 connection (`aws_default`), as Airflow reads one from the environment.
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
            {
                "conn_type": "aws",
                "login": TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                "password": TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                "extra": {"endpoint_url": s3_endpoint, "region_name": TEST_CREDENTIALS["AWS_DEFAULT_REGION"]},
            }
        ),
        "MLFLOW_TRACKING_URI": mlflow_url,
        "MLOPS_MLFLOW_UI_URL": mlflow_url,
        # Artifacts go through the tracking server (it proxies them to S3): HTTP only for tasks.
        "MLOPS_MLFLOW_ARTIFACT_URL": "mlflow-artifacts:/mlops",
        "MLOPS_FEAST_REGISTRY": databases["feast"],
        "MLOPS_REDIS_URL": redis_url,
        "MLOPS_LOCK_DATABASE_URL": databases["lock"],
        "MLOPS_TRAINING_QUEUE": TRAINING_QUEUE,
        "MLOPS_AIRFLOW_CELERY_WORKERS": WORKERS,
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db.replace(
            "postgresql://", "postgresql+psycopg2://", 1
        ),
        # Airflow's async engine would default to asyncpg; psycopg 3 is the driver installed.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": airflow_db.replace(
            "postgresql://", "postgresql+psycopg_async://", 1
        ),
        "AIRFLOW__CELERY__BROKER_URL": redis_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{airflow_db}",
        # Two cores: two task processes per worker.
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW_HOME": str(home / "airflow"),
    }
    # The project first (Airflow's environment adds it only when PYTHONPATH is unset), then the
    # S3 access for DuckDB when it cannot fetch its own, then what the caller had.
    paths = [str(PROJECT_ROOT)]
    if not duckdb_s3.httpfs_available():
        paths.append(str(duckdb_s3.SITE))
    paths += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def check_dependencies() -> None:
    """Raise ``RuntimeError`` naming what is missing for the cluster profile's processes: Airflow's
    Celery provider loading with the installed Celery, and ``aiobotocore``, with which the deferred
    S3 landing sensors wait in the triggerer."""
    problems = []
    try:
        import airflow.providers.celery.executors.celery_executor_utils  # noqa: F401
    except ImportError as exc:
        problems.append(
            f"the CeleryExecutor cannot load ({exc}): apache-airflow-providers-celery 3.26 imports "
            "`celery.backends.database.retry`, which Celery 5.7 removed (Celery 5.6 has it)"
        )
    if importlib.util.find_spec("aiobotocore") is None:
        problems.append(
            "aiobotocore is not installed: a deferred S3KeySensor fails with `No module named "
            "'aiobotocore'` (apache-airflow-providers-amazon[aiobotocore])"
        )
    if problems:
        raise RuntimeError("; ".join(problems))


@contextlib.contextmanager
def services(
    home: Path,
    postgres_url: str,
    redis_server_url: str,
    keep_up: bool = False,
    log: Callable[[str], None] = logger.info,
) -> Iterator[Cluster]:
    """Create the databases and buckets, start S3 and MLflow; remove them all at the end unless
    ``keep_up`` (then ``python -m include.devtools demo-cluster --down`` does)."""
    run = uuid.uuid4().hex[:10]
    logs = home / "cluster" / "logs"
    state = State.load(home / "cluster" / "state.json")
    if state.processes or state.databases:
        raise RuntimeError(
            f"a cluster replay under {home} is still up: `python -m include.devtools demo-cluster --down`"
        )
    try:
        databases = create_databases(state, postgres_url, run)
        state.redis_url = redis_url = empty_redis_database(redis_server_url)
        state.save()
        log(f"databases {', '.join(state.databases)} on {masked(postgres_url)}; Redis {masked(redis_url)}")
        base = {**os.environ, **TEST_CREDENTIALS}
        s3 = start_s3(state, base, logs)
        buckets = create_buckets(s3, run)
        log(f"S3 server {s3}: buckets {', '.join(buckets.values())}")
        mlflow_env = {**base, "MLFLOW_S3_ENDPOINT_URL": s3, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        mlflow_url = start_mlflow(state, databases["mlflow"], f"s3://{buckets['mlflow']}", mlflow_env, logs)
        log(f"MLflow tracking server {mlflow_url} (backend PostgreSQL, artifacts s3://{buckets['mlflow']})")
        env = cluster_env(home, databases, buckets, s3, redis_url, mlflow_url)
        yield Cluster(home, run, env, databases, buckets, s3, redis_url, mlflow_url, state)
    finally:
        if not keep_up:
            teardown(state, log)


def teardown(state: State, log: Callable[[str], None] = logger.info) -> None:
    """Stop the run's servers, drop its databases, empty its Redis database."""
    stopped = stop_processes(state)
    keys = clear_redis(state)
    dropped = drop_databases(state)
    state.redis_url = ""
    state.save()
    dropped_text = ", ".join(dropped) or "no database"
    log(f"stopped {', '.join(stopped) or 'nothing'}; dropped {dropped_text}; deleted {keys} Redis keys")


@contextlib.contextmanager
def applied(env: dict[str, str]) -> Iterator[None]:
    """The process environment with ``env`` applied (settings re-read), restored afterwards."""
    from include.mlops.core import settings as settings_module

    before = dict(os.environ)
    os.environ.update(env)
    settings_module.settings.cache_clear()
    duckdb_s3.install()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(before)
        settings_module.settings.cache_clear()


# --------------------------------------------------------------------------------------------------
# Figures from the metadata DB


def task_figures(database_url: str) -> dict:
    """Tasks per worker and per queue, and the queued -> start latency of every task instance that
    ran (seconds: median, p90, max; a resumed deferred task is left out: its start is its first),
    read from an Airflow metadata DB (PostgreSQL, or the embedded profile's SQLite file)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    query = sqlalchemy.text(
        "SELECT dag_id, task_id, hostname, queue, scheduled_dttm, queued_dttm, start_date FROM task_instance "
        "WHERE start_date IS NOT NULL AND state IN ('success', 'failed', 'up_for_retry')"
    )
    try:
        with engine.connect() as conn:
            rows = conn.execute(query).fetchall()
    finally:
        engine.dispose()
    per_worker: dict[str, int] = {}
    per_queue: dict[str, int] = {}
    latencies: dict[str, list[float]] = {"scheduled_to_start_s": [], "queued_to_start_s": []}
    training = []
    for dag_id, task_id, hostname, queue, scheduled, queued, started in rows:
        per_worker[hostname or "?"] = per_worker.get(hostname or "?", 0) + 1
        per_queue[queue or "?"] = per_queue.get(queue or "?", 0) + 1
        for name, since in (("scheduled_to_start_s", scheduled), ("queued_to_start_s", queued)):
            # A deferred task resumed is scheduled and queued again after its first start: not counted.
            if since and started and _utc(started) >= _utc(since):
                latencies[name].append((_utc(started) - _utc(since)).total_seconds())
        if (dag_id, task_id) == ("train_model", "train"):
            training.append({"hostname": hostname, "queue": queue})
    return {
        "task_instances": len(rows),
        "per_worker": per_worker,
        "per_queue": per_queue,
        "training": training,
        **{name: _spread(values) for name, values in latencies.items()},
    }


def _spread(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {"median": None, "p90": None, "max": None, "count": 0}
    return {
        "median": round(statistics.median(values), 2),
        "p90": round(values[int(0.9 * (len(values) - 1))], 2),
        "max": round(values[-1], 2),
        "count": len(values),
    }


def _utc(value):
    import datetime as dt

    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# --------------------------------------------------------------------------------------------------
# Command line


def down(home: Path) -> int:
    """Stop what a ``--keep-up`` replay left running under ``home`` and drop its databases."""
    state = State.load(home / "cluster" / "state.json")
    os.environ["AIRFLOW_HOME"] = str(home / "airflow")
    stopped = local_airflow.down()
    print(f"Airflow: stopped {', '.join(stopped) or 'nothing'}")
    teardown(state, print)
    return 0


def main(argv: list[str] | None = None) -> int:
    from include.devtools import demo
    from include.mlops.core.settings import settings

    parser = argparse.ArgumentParser(
        prog="make demo-cluster ARGS=...",
        description=__doc__,
        epilog="Other options are the demo's (make demo ARGS=--help): --days, --rows-per-day, ...",
    )
    parser.add_argument("--keep-up", action="store_true", help="leave every service running")
    parser.add_argument("--down", action="store_true", help="stop what --keep-up left, drop its databases")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("MLOPS_TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL server (a database to connect to for CREATE DATABASE)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("MLOPS_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0",
        help="a Redis server (an empty logical database of it is used)",
    )
    parser.add_argument(
        "--figures",
        metavar="DATABASE_URL",
        help="only print the task figures of an Airflow metadata DB (sqlite:///.local/airflow/airflow.db "
        "after `make demo`: the LocalExecutor's) and exit",
    )
    args, demo_args = parser.parse_known_args(argv)
    home = settings().home
    if args.down:
        return down(home)
    if args.figures:
        print(json.dumps(task_figures(args.figures), indent=2))
        return 0
    if local_airflow.running():
        print("a local Airflow is already running: `make down` first", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="[cluster %(asctime)s] %(message)s", datefmt="%H:%M:%S")
    try:
        check_dependencies()
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    started = time.monotonic()
    with services(home, args.postgres_url, args.redis_url, keep_up=args.keep_up, log=print) as cluster:
        with applied(cluster.env):
            try:
                code = demo.main([*demo_args, *(["--keep-up"] if args.keep_up else [])])
            finally:
                if not args.keep_up:
                    local_airflow.down()  # also when the demo failed before its own clean-up
        figures = task_figures(cluster.databases["airflow"])
        print(f"Cluster replay: {(time.monotonic() - started) / 60:.1f} min in all (services included)")
        print(json.dumps(figures, indent=2))
        if args.keep_up:
            print(
                f"Everything keeps running (--keep-up): Airflow {local_airflow.base_url()}, MLflow "
                f"{cluster.mlflow_url}, S3 {cluster.s3_endpoint}; stop it all with "
                "`python -m include.devtools demo-cluster --down`"
            )
    return code


if __name__ == "__main__":
    sys.exit(main())
