"""A local Airflow for the embedded profile: API server (UI), scheduler, DAG processor, triggerer.

``make up`` / ``make down`` / ``make airflow ARGS=...`` call this module. It keeps everything under
``$MLOPS_HOME/airflow`` (SQLite metadata DB, logs, PID files, generated secrets), runs the
LocalExecutor with a parallelism that fits a 2-core laptop, and applies ``airflow_settings.yaml``
(the Astro CLI's format for connections, pools and variables) because the Astro CLI is not needed
to run the project.

Each component runs in its own process group, recorded in a PID file, so ``down`` stops exactly
what ``up`` started, task processes included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from include.mlops.core.settings import PROJECT_ROOT, settings

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
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


def running() -> dict[str, int]:
    """The components started by ``up`` that are still alive, by name."""
    alive = {}
    for component in COMPONENTS:
        path = _pid_file(component)
        if path.exists():
            pid = int(path.read_text())
            if _alive(pid):
                alive[component] = pid
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
        dead = [c for c in COMPONENTS if c not in running()]
        if dead:
            raise RuntimeError(
                f"Airflow component(s) {', '.join(dead)} exited; "
                f"see {airflow_home() / 'logs'}/<component>.log"
            )
        time.sleep(1.0)
    raise TimeoutError(f"Airflow was not healthy after {timeout:.0f}s (last answer: {last})")


def up() -> None:
    """Migrate the DB, apply airflow_settings.yaml and start every component in the background."""
    if running():
        print(f"Airflow is already running ({', '.join(running())}); `make down` stops it.")
        return
    home = airflow_home()
    (home / "run").mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    env = airflow_env()
    started = time.monotonic()
    subprocess.run([_airflow_bin(), "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        [sys.executable, "-m", "include.devtools", "airflow", "apply-settings"],
        env=env,
        check=True,
        cwd=PROJECT_ROOT,
    )
    for component in COMPONENTS:
        log = open(home / "logs" / f"{component}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [_airflow_bin(), component],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        _pid_file(component).write_text(str(proc.pid))
    wait_healthy()
    print(
        f"Airflow is up in {time.monotonic() - started:.0f}s.\n"
        f"  UI:       {base_url()}\n"
        f"  login:    {USER} / {password()}\n"
        f"  home:     {home}\n"
        f"  logs:     {home / 'logs'}\n"
        f"  stop it:  make down"
    )


def down(timeout: float = 30.0) -> list[str]:
    """Stop every component started by ``up``, with the task processes in their groups."""
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
    for component in COMPONENTS:
        _pid_file(component).unlink(missing_ok=True)
    return stopped


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
        up()
    elif args.command == "down":
        stopped = down()
        print(f"Stopped {', '.join(stopped)}." if stopped else "Nothing was running.")
    elif args.command == "status":
        alive = running()
        print("\n".join(f"{c}: pid {p}" for c, p in alive.items()) or "Airflow is not running.")
        return 0 if alive else 1
    elif args.command == "apply-settings":
        counts = apply_settings()
        print("Applied airflow_settings.yaml: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    elif args.command == "env":
        print(env_exports(show_secrets=args.show_secrets))
    elif args.command == "run":
        cmd = [a for a in args.args if a != "--"]
        os.execve(_airflow_bin(), [_airflow_bin(), *cmd], airflow_env())
    return 0


if __name__ == "__main__":
    sys.exit(main())
