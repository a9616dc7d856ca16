"""A local Airflow for the embedded profile: API server (UI), scheduler, DAG processor, triggerer.

``make up`` / ``make down`` / ``make airflow ARGS=...`` call this module. It keeps everything under
``$MLOPS_HOME/airflow`` (SQLite metadata DB, logs, PID files, generated secrets), runs the
LocalExecutor with a parallelism that fits a 2-core laptop, and applies ``airflow_settings.yaml``
(the Astro CLI's format for connections, pools and variables) because the Astro CLI is not needed
to run the project.

A home is prepared before it is used (:func:`prepare`): the metadata DB migrated when it is not at
Airflow's head revision, ``airflow_settings.yaml`` applied, and the Feast definitions deployed
(``python -m include.mlops features apply``); ``up`` always applies and deploys, ``run`` only what
a fresh or changed home needs, so ``make airflow ARGS='dags test ...'`` works on a fresh clone.

Each component runs in its own process group, recorded in a PID file, so ``down`` stops exactly
what ``up`` started, task processes included. The MLflow UI (``MLOPS_MLFLOW_UI_URL``, where the
task pages' "MLflow run" buttons lead) is started and stopped with them.

The environment it is given chooses the rest: with ``AIRFLOW__CORE__EXECUTOR=CeleryExecutor`` and a
PostgreSQL metadata DB (what :mod:`include.devtools.cluster` sets for ``make demo-cluster``), ``up``
also starts a Celery worker per queue list of :data:`CELERY_WORKERS`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import secrets
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from include.mlops.core.settings import PROJECT_ROOT, settings

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
"""Airflow's components, each an ``airflow COMMAND`` of its own."""
CELERY_WORKERS = "MLOPS_AIRFLOW_CELERY_WORKERS"
"""With the CeleryExecutor: the Celery workers to start, one queue list each, separated by ``;``
(``default;default,training``: two workers, the second also serving the training queue)."""
MLFLOW_UI = "mlflow-ui"
"""The MLflow UI started beside them (``python -m include.devtools mlflow-ui``)."""
USER = "admin"


def airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME") or settings().home / "airflow")


def port() -> int:
    return int(os.environ.get("MLOPS_AIRFLOW_PORT", "8080"))


def base_url() -> str:
    return f"http://127.0.0.1:{port()}"


def _create_private(path: Path, content: str) -> str:
    """Write ``content`` to ``path`` readable by its owner only, unless ``path`` already exists.

    The file is never readable by others, whatever the umask: it is written whole into a temporary
    file created with mode 0600 and then linked into place, which fails if ``path`` exists. Two
    processes that race therefore agree on one content (the loser reads the winner's), and no
    reader ever sees a partly written file. Returns what ``path`` holds.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process won the race: its file is the one to use
            except OSError:
                # A file system without hard links: create the file itself, exclusively and private
                # (there alone, a reader racing the first writer could see it before it is whole).
                with contextlib.suppress(FileExistsError):
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "w") as f:
                        f.write(content)
        finally:
            tmp.unlink(missing_ok=True)
    elif path.stat().st_mode & 0o077:
        # Written world-readable by an earlier version of this module: make it private now.
        with contextlib.suppress(PermissionError):
            path.chmod(0o600)
    return path.read_text()


def _secret(home: Path, name: str) -> str:
    """A random secret generated once per Airflow home and kept there (never in the project)."""
    return _create_private(home / name, secrets.token_urlsafe(32)).strip()


def password() -> str:
    """The admin password of the simple auth manager, generated on first use."""
    path = airflow_home() / "passwords.json"
    return json.loads(_create_private(path, json.dumps({USER: secrets.token_urlsafe(12)})))[USER]


SECRET_FILES = {
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt_secret",  # pragma: allowlist secret (a file name)
    "AIRFLOW__API__SECRET_KEY": "api_secret_key",  # pragma: allowlist secret (a file name)
}
"""The environment variables that carry a secret, by the file of the Airflow home that keeps it."""


def airflow_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every local Airflow process runs with. Values already set win."""
    env = dict(os.environ if base is None else base)
    home = airflow_home()
    password()  # make sure the passwords file exists before the API server reads it
    defaults = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # Two cores: four task slots keep the machine responsive (32 workers took 5.7 GB).
        "AIRFLOW__CORE__PARALLELISM": os.environ.get("MLOPS_AIRFLOW_PARALLELISM", "4"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url()}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port()),
        "AIRFLOW__API__BASE_URL": base_url(),
        "AIRFLOW__API__WORKERS": "1",
        # Every component must sign and check task tokens with the same secret.
        **{key: _secret(home, name) for key, name in SECRET_FILES.items()},
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        # Task logs: MLflow writes its records (and alembic's schema checks, at INFO) through a
        # handler of its own on stderr, which Airflow's log viewer shows as ERROR, and draws a
        # progress bar per artifact download (one ERROR line each). Only its warnings are kept.
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "20",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p),
    }
    for key, value in defaults.items():
        env.setdefault(key, value)
    # Task processes import the project from here; keep their imports compiled, not recompiled.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def env_exports(show_secrets: bool = False) -> str:
    """``airflow_env`` as shell exports. Unless ``show_secrets``, a secret is not printed: its export
    reads the file that keeps it, so ``eval "$(... airflow env)"`` still gives the same environment."""
    env = airflow_env({})
    lines = []
    for key, value in sorted(env.items()):
        if key in SECRET_FILES and not show_secrets:
            source = shlex.quote(str(Path(env["AIRFLOW_HOME"]) / SECRET_FILES[key]))
            lines.append(f'export {key}="$(cat {source})"')
        else:
            lines.append(f"export {key}={shlex.quote(value)}")
    return "\n".join(lines)


def _airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def run_airflow(args: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run one Airflow CLI command against the local Airflow home."""
    return subprocess.run([_airflow_bin(), *args], env=airflow_env(), check=check, **kwargs)


def _pid_file(component: str) -> Path:
    return airflow_home() / "run" / f"{component}.pid"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs. A component that exited but was started by this very process (the
    demo, the benchmarks, the tests) stays a zombie until reaped: it is reaped here, not waited for."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def components(env: dict[str, str]) -> dict[str, list[str]]:
    """The processes ``up`` starts for ``env``, by name: Airflow's :data:`COMPONENTS`, and with the
    CeleryExecutor a Celery worker per queue list of :data:`CELERY_WORKERS` (default one worker)."""
    commands = {component: [_airflow_bin(), component] for component in COMPONENTS}
    if env.get("AIRFLOW__CORE__EXECUTOR", "").rpartition(".")[2] != "CeleryExecutor":
        return commands
    run = Path(env["AIRFLOW_HOME"]) / "run"
    specs = [q.strip() for q in env.get(CELERY_WORKERS, "default").split(";") if q.strip()]
    for number, queues in enumerate(specs, start=1):
        name = f"celery-worker-{number}"
        commands[name] = [
            *(_airflow_bin(), "celery", "worker", "--queues", queues, "--celery-hostname", f"{name}@%h"),
            # Each worker's own PID file (the default one is shared); logs are read from the shared
            # log folder, so no worker serves them (they would all want the same port).
            *("--pid", str(run / f"{name}.celery.pid"), "--skip-serve-logs"),
        ]
    return commands


WORKER_NAME = "MLOPS_AIRFLOW_WORKER_NAME"
"""The name of the Celery worker a process belongs to (set by ``up`` for each worker)."""


def worker_hostname() -> str:
    """Airflow's ``hostname_callable`` in a Celery worker: ``<worker>@<host>``, so a task instance's
    hostname says which of the workers on this one machine ran it."""
    host = socket.getfqdn()
    name = os.environ.get(WORKER_NAME)
    return f"{name}@{host}" if name else host


def component_env(component: str, env: dict[str, str]) -> dict[str, str]:
    """The environment of one component: ``env``, plus its name and hostname in a Celery worker."""
    if not component.startswith("celery-worker-"):
        return env
    return {
        **env,
        WORKER_NAME: component,
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "include.devtools.local_airflow.worker_hostname",
    }


def running() -> dict[str, int]:
    """The components started by ``up`` that are still alive, by name (the MLflow UI included)."""
    alive = {}
    folder = airflow_home() / "run"
    for path in sorted(folder.glob("*.pid")) if folder.is_dir() else []:
        if path.name.endswith(".celery.pid"):
            continue  # a Celery worker's own record of its PID; its group's is `<name>.pid`
        with contextlib.suppress(ValueError, OSError):
            pid = int(path.read_text())
            if _alive(pid):
                alive[path.stem] = pid
    return alive


def apply_settings(path: Path = PROJECT_ROOT / "airflow_settings.yaml") -> dict[str, int]:
    """Create or update the connections, pools and variables of an Astro ``airflow_settings.yaml``.

    Runs inside a process that has the local Airflow environment (see ``airflow_env``).
    """
    import yaml

    # The ORM models, not the Task SDK's: this writes the metadata DB directly, as the CLI does.
    from airflow.models import Connection, Pool, Variable
    from airflow.utils.session import create_session

    spec = (yaml.safe_load(path.read_text()) or {}).get("airflow") or {}
    counts = {"connections": 0, "pools": 0, "variables": 0}
    with create_session() as session:
        for item in spec.get("connections") or []:
            conn_id = item["conn_id"]
            session.query(Connection).filter(Connection.conn_id == conn_id).delete()  # noqa: AIR311
            extra = item.get("conn_extra")
            session.add(
                Connection(  # noqa: AIR311
                    conn_id=conn_id,
                    conn_type=item.get("conn_type"),
                    host=item.get("conn_host"),
                    schema=item.get("conn_schema"),
                    login=item.get("conn_login"),
                    password=item.get("conn_password"),
                    port=item.get("conn_port"),
                    extra=json.dumps(extra) if isinstance(extra, dict) else extra,
                )
            )
            counts["connections"] += 1
        session.flush()
        for item in spec.get("pools") or []:
            Pool.create_or_update_pool(
                name=item["pool_name"],
                slots=int(item["pool_slot"]),
                description=item.get("pool_description") or "",
                include_deferred=bool(item.get("include_deferred", False)),
                session=session,
            )
            counts["pools"] += 1
        for item in spec.get("variables") or []:
            Variable.set(item["variable_name"], item.get("variable_value"), session=session)  # noqa: AIR311
            counts["variables"] += 1
    return counts


def _apply_settings_here() -> bool:
    """Whether this process already has the local Airflow's metadata DB configured."""
    key = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
    return os.environ.get(key) == airflow_env().get(key)


def migrations_head() -> str | None:
    """The newest revision of Airflow's metadata DB schema, read from its migration scripts.

    Reading the scripts (about a hundred small files) takes milliseconds; importing Airflow to ask
    it takes seconds. ``None`` when the scripts do not name exactly one head.
    """
    spec = importlib.util.find_spec("airflow")
    if spec is None or not spec.submodule_search_locations:
        return None
    revisions, parents = set(), set()
    for script in (Path(next(iter(spec.submodule_search_locations))) / "migrations" / "versions").glob(
        "*.py"
    ):
        text = script.read_text()
        revision = re.search(r"^revision\s*=\s*[\"']([0-9a-f]+)[\"']", text, re.MULTILINE)
        down = re.search(r"^down_revision\s*=\s*(.+)$", text, re.MULTILINE)
        if revision:
            revisions.add(revision.group(1))
        if down:
            parents.update(re.findall(r"[\"']([0-9a-f]+)[\"']", down.group(1)))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def database_revision(env: dict[str, str]) -> str | None:
    """The revision a SQLite metadata DB is at; ``None`` when there is none yet or it is no SQLite."""
    url = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    if not path.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return None
    return rows[0][0] if len(rows) == 1 else None


def needs_migration(env: dict[str, str]) -> bool:
    """Whether ``airflow db migrate`` has work to do (when unsure, it is run: it is idempotent)."""
    head = migrations_head()
    return head is None or database_revision(env) != head


def definitions_digest() -> str:
    """A digest of what the Feast deploy registers: the repository's files and the settings that
    shape the registry (profile, registry, lake). A change means the definitions must be deployed."""
    s = settings()
    digest = hashlib.sha256()
    for value in (s.profile, s.feast_registry, s.lake_url, s.s3_endpoint_url or ""):
        digest.update(f"{value}\0".encode())
    repo = Path(s.feast_repo)
    for path in sorted(repo.rglob("*")):
        definition = path.suffix in {".py", ".yaml"} or path.name == ".feastignore"
        if definition and path.is_file() and "__pycache__" not in path.parts:
            digest.update(f"{path.relative_to(repo)}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _registry_missing() -> bool:
    """Whether the embedded Feast registry does not exist yet (a cluster one is never assumed missing)."""
    s = settings()
    path = Path(s.feast_registry)
    return not s.is_cluster and not (path.is_file() and path.stat().st_size > 0)


class _Record:
    """What was last applied to this home (``run/prepared.json``), saved after every step."""

    def __init__(self) -> None:
        self.path = airflow_home() / "run" / "prepared.json"
        self.values = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def set(self, key: str, value: str) -> None:
        self.values[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(self.values, indent=2))
        os.replace(tmp, self.path)


def _step(command: list[str], env: dict[str, str], what: str) -> tuple[str, float]:
    """Run one preparation command; its output is shown only when it fails. Its stdout and seconds."""
    started = time.monotonic()
    done = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-8000:])
        raise RuntimeError(f"{what} failed (exit {done.returncode}): {shlex.join(command)}")
    return done.stdout, time.monotonic() - started


def _deploy_feast(env: dict[str, str], record: _Record, force: bool, log) -> str | None:
    """Deploy the Feast definitions when needed (see :func:`prepare`); what was done, if anything."""
    digest = definitions_digest()
    missing = _registry_missing()
    if not (force or missing or record.get("feast_definitions") != digest):
        return None
    if not (force or missing) and running():
        log(
            "The Feast definitions changed since they were deployed. Airflow is running, so they are not "
            "applied now (an apply while a day materializes can lose its state): `make feast-apply`."
        )
        return None
    command = [sys.executable, "-m", "include.mlops", "features", "apply"]
    _, seconds = _step(command, env, "deploying the Feast definitions")
    record.set("feast_definitions", digest)
    return f"Feast definitions deployed to {settings().feast_registry} ({seconds:.1f} s)"


def prepare(force: bool = False, log=lambda line: print(line, file=sys.stderr, flush=True)) -> list[str]:
    """Make the Airflow home usable: migrate its DB, apply ``airflow_settings.yaml``, deploy Feast.

    The migration runs only when the DB is not at Airflow's head revision. The settings file is
    applied after a migration, when it changed since it was last applied here, or when ``force``;
    the Feast definitions are deployed when the registry does not exist, when they (or the settings
    that shape them) changed since the last deploy from here, or when ``force``. A changed
    repository is not deployed while Airflow runs: that is said, with the command. An already
    prepared home costs a few milliseconds. Returns what was done (also logged).
    """
    env = airflow_env()
    record = _Record()
    done: list[str] = []
    migrated = needs_migration(env)
    if migrated:
        _, seconds = _step([_airflow_bin(), "db", "migrate"], env, "airflow db migrate")
        done.append(f"database migrated ({seconds:.1f} s)")
    settings_digest = hashlib.sha256((PROJECT_ROOT / "airflow_settings.yaml").read_bytes()).hexdigest()
    if force or migrated or record.get("airflow_settings") != settings_digest:
        command = [sys.executable, "-m", "include.devtools", "airflow", "apply-settings"]
        out, _ = _step(command, env, "applying airflow_settings.yaml")
        record.set("airflow_settings", settings_digest)
        done.append(out.strip().removeprefix("Applied ") or "airflow_settings.yaml applied")
    deployed = _deploy_feast(env, record, force, log)
    if deployed:
        done.append(deployed)
    if done:
        log(f"Prepared the Airflow home {airflow_home()}: " + "; ".join(done))
    return done


def mlflow_ui_address() -> tuple[str, int] | None:
    """Host and port of the MLflow UI to start (from ``MLOPS_MLFLOW_UI_URL``); ``None`` when the URL
    is not on this machine (a shared MLflow server: nothing to start)."""
    url = urlparse(settings().mlflow_ui_url)
    if url.hostname not in {"127.0.0.1", "localhost", "::1", "0.0.0.0"}:
        return None
    return url.hostname, url.port or (443 if url.scheme == "https" else 80)


def _listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def start_mlflow_ui(env: dict[str, str]) -> str:
    """Start the MLflow UI in its own process group, unless something already listens on its port.

    Returns a line for the operator: where it is, or why it was not started.
    """
    address = mlflow_ui_address()
    url = settings().mlflow_ui_url
    if url == settings().mlflow_tracking_uri.rstrip("/"):
        return f"{url} (the MLflow tracking server)"
    if address is None:
        return f"{url} (not on this machine: not started)"
    host, ui_port = address
    if _listening(host, ui_port):
        return f"{url} (port {ui_port} already in use, maybe by `make mlflow`: not started)"
    log = open(airflow_home() / "logs" / f"{MLFLOW_UI}.log", "ab")  # noqa: SIM115 - handed to the child
    command = [sys.executable, "-m", "include.devtools", "mlflow-ui", "--host", host, "--port", str(ui_port)]
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=airflow_home(),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    _pid_file(MLFLOW_UI).write_text(str(proc.pid))
    return url


def wait_mlflow_ui(timeout: float = 60.0) -> bool:
    """Poll the MLflow UI's ``/health`` until it answers; ``False`` if it exited or never answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and MLFLOW_UI in running():
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(f"{settings().mlflow_ui_url}/health", timeout=5) as resp,
        ):
            if resp.status == 200:
                return True
        time.sleep(1.0)
    return False


def wait_healthy(timeout: float = 90.0) -> dict:
    """Poll ``/api/v2/monitor/health`` until the metadata DB and the scheduler are healthy."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url()}/api/v2/monitor/health", timeout=5) as resp:
                health = json.loads(resp.read())
            last = health
            if all(health.get(k, {}).get("status") == "healthy" for k in ("metadatabase", "scheduler")):
                return health
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as exc:
            last = exc
        dead = [c for c in components(airflow_env()) if c not in running()]
        if dead:
            raise RuntimeError(
                f"Airflow component(s) {', '.join(dead)} exited; "
                f"see {airflow_home() / 'logs'}/<component>.log"
            )
        time.sleep(1.0)
    raise TimeoutError(f"Airflow was not healthy after {timeout:.0f}s (last answer: {last})")


def up() -> None:
    """Prepare the home, start every component and the MLflow UI in the background."""
    if running():
        print(f"Airflow is already running ({', '.join(running())}); `make down` stops it.")
        return
    home = airflow_home()
    (home / "run").mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    env = airflow_env()
    started = time.monotonic()
    prepare(force=True, log=print)
    for component, command in components(env).items():
        log = open(home / "logs" / f"{component}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            command,
            env=component_env(component, env),
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        _pid_file(component).write_text(str(proc.pid))
    mlflow_ui = start_mlflow_ui(env)
    wait_healthy()
    if MLFLOW_UI in running() and not wait_mlflow_ui():
        mlflow_ui += f" (did not answer: see {home / 'logs' / f'{MLFLOW_UI}.log'})"
    print(
        f"Airflow is up in {time.monotonic() - started:.0f}s.\n"
        f"  UI:       {base_url()}\n"
        f"  login:    {USER} / {password()}\n"
        f"  MLflow:   {mlflow_ui}\n"
        f"  home:     {home}\n"
        f"  logs:     {home / 'logs'}\n"
        f"  stop it:  make down"
    )


def down(timeout: float = 30.0) -> list[str]:
    """Stop every component started by ``up`` (the MLflow UI too), with the processes in their groups."""
    stopped = []
    for component, pid in running().items():
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        stopped.append(component)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running():
        time.sleep(0.5)
    for component, pid in running().items():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        print(f"{component} did not stop in {timeout:.0f}s and was killed", file=sys.stderr)
    for path in (airflow_home() / "run").glob("*.pid"):
        path.unlink(missing_ok=True)
    return stopped


def status() -> dict[str, str]:
    """What runs, by component: its process and, for those that serve one, the URL."""
    urls = {"api-server": base_url(), MLFLOW_UI: settings().mlflow_ui_url}
    return {c: f"pid {pid}" + (f" ({urls[c]})" if c in urls else "") for c, pid in running().items()}


NEEDS_NO_HOME = {"version", "cheat-sheet", "config", "db", "-h", "--help"}
"""Airflow commands that ``run`` passes on without preparing the home (``db`` manages it itself)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.devtools airflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the local Airflow in the background")
    sub.add_parser("down", help="stop what `up` started")
    sub.add_parser("status", help="list the running components")
    sub.add_parser("apply-settings", help="apply airflow_settings.yaml to the metadata DB")
    env = sub.add_parser("env", help="print the Airflow environment as shell exports")
    env.add_argument(
        "--show-secrets",
        action="store_true",
        help="print the secrets' values (by default they are read from their files when evaluated)",
    )
    run = sub.add_parser("run", help="run an Airflow CLI command against the local Airflow home")
    run.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    if args.command == "up":
        try:
            up()
        except RuntimeError as error:  # a preparation step failed; its output is above
            print(error, file=sys.stderr)
            return 1
    elif args.command == "down":
        stopped = down()
        print(f"Stopped {', '.join(stopped)}." if stopped else "Nothing was running.")
    elif args.command == "status":
        alive = status()
        print("\n".join(f"{c}: {line}" for c, line in alive.items()) or "Airflow is not running.")
        return 0 if alive else 1
    elif args.command == "apply-settings":
        if not _apply_settings_here():
            # Run where the local Airflow's metadata DB is configured, never against ~/airflow.
            command = [sys.executable, "-m", "include.devtools", "airflow", "apply-settings"]
            return subprocess.run(command, env=airflow_env(), cwd=PROJECT_ROOT).returncode
        counts = apply_settings()
        print("Applied airflow_settings.yaml: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    elif args.command == "env":
        print(env_exports(show_secrets=args.show_secrets))
    elif args.command == "run":
        cmd = [a for a in args.args if a != "--"]
        if not NEEDS_NO_HOME.intersection(cmd[:1] + [a for a in cmd if a in ("-h", "--help")]):
            try:
                prepare()
            except RuntimeError as error:
                print(error, file=sys.stderr)
                return 1
        os.execve(_airflow_bin(), [_airflow_bin(), *cmd], airflow_env())
    return 0


if __name__ == "__main__":
    sys.exit(main())
