"""The local Airflow launcher: whether a component still runs, and how it keeps its secrets."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from include.devtools import local_airflow


def test_an_exited_child_is_not_alive_even_before_it_is_reaped() -> None:
    # The demo, the benchmarks and the tests start the components themselves: a component that
    # exited stays a zombie of that process until reaped, and `down` must not wait for it.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while local_airflow._alive(child.pid):
        assert time.monotonic() < deadline, "an exited child still counts as alive"
        time.sleep(0.05)
    child.returncode = 0  # reaped by _alive; keep Popen from waiting on a pid it no longer owns


def test_a_running_process_is_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert local_airflow._alive(child.pid)
    finally:
        child.kill()
        child.wait()


@pytest.fixture
def airflow_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "airflow"
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    return home


@pytest.fixture
def permissive_umask():
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_secret_files_are_private_from_their_creation(airflow_home, permissive_umask, monkeypatch) -> None:
    # A file written and then chmod-ed is readable by anyone in between: take the chmod away and
    # the files must still be private, so they are created 0600 rather than fixed afterwards.
    monkeypatch.setattr(os, "chmod", lambda *args, **kwargs: None)
    monkeypatch.setattr(Path, "chmod", lambda *args, **kwargs: None)
    local_airflow.airflow_env({})
    written = sorted(p.name for p in airflow_home.iterdir())
    assert written == ["api_secret_key", "jwt_secret", "passwords.json"], "no temporary file stays behind"
    for path in airflow_home.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path.name} is {oct(path.stat().st_mode)}"


def test_secrets_are_generated_once_and_kept(airflow_home, permissive_umask) -> None:
    first = local_airflow.airflow_env({})
    password = local_airflow.password()
    again = local_airflow.airflow_env({})
    for key in local_airflow.SECRET_FILES:
        assert first[key] == again[key] and len(first[key]) >= 32
    assert local_airflow.password() == password
    assert json.loads((airflow_home / "passwords.json").read_text()) == {local_airflow.USER: password}


def test_an_existing_world_readable_secret_is_made_private(airflow_home) -> None:
    airflow_home.mkdir()
    (airflow_home / "jwt_secret").write_text("kept-from-before\n")
    (airflow_home / "jwt_secret").chmod(0o644)
    assert local_airflow._secret(airflow_home, "jwt_secret") == "kept-from-before"
    assert stat.S_IMODE((airflow_home / "jwt_secret").stat().st_mode) == 0o600


def test_racing_creators_agree_on_one_whole_secret(tmp_path, permissive_umask) -> None:
    # Each contender brings its own value; all must come back with the same, complete one.
    path = tmp_path / "home" / "secret"
    contenders = 16
    values = [f"{i:02d}" * 50_000 for i in range(contenders)]
    barrier = threading.Barrier(contenders)

    def create(value: str) -> str:
        barrier.wait()
        return local_airflow._create_private(path, value)

    with ThreadPoolExecutor(contenders) as pool:
        seen = list(pool.map(create, values))
    assert len(set(seen)) == 1 and seen[0] in values
    assert path.read_text() == seen[0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["secret"]


def _env_output(capsys, *args: str) -> str:
    assert local_airflow.main(["env", *args]) == 0
    return capsys.readouterr().out


def test_env_prints_no_secret_unless_asked(airflow_home, capsys) -> None:
    env = local_airflow.airflow_env({})
    secret_keys = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY")
    values = [env[key] for key in secret_keys] + [local_airflow.password()]
    shown = _env_output(capsys)
    assert not [v for v in values if v in shown], "a secret is printed without --show-secrets"
    assert "AIRFLOW__API_AUTH__JWT_SECRET" in shown  # named, with where its value comes from
    assert f"AIRFLOW_HOME={airflow_home}" in shown

    asked = _env_output(capsys, "--show-secrets")
    assert all(v in asked for v in values[:-1])
    assert values[-1] not in asked  # the login password is not part of the environment at all


def test_env_without_secrets_still_evaluates_to_the_full_environment(airflow_home, capsys) -> None:
    env = local_airflow.airflow_env({})
    script = _env_output(capsys) + "\nenv -0\n"
    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]}
    )
    evaluated = dict(item.split("=", 1) for item in out.stdout.split("\0") if "=" in item)
    for key, value in env.items():
        assert evaluated[key] == value, key


def test_without_hard_links_the_secret_is_still_created_private(
    tmp_path, permissive_umask, monkeypatch
) -> None:
    def no_links(*args, **kwargs):
        raise PermissionError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "secret"
    assert local_airflow._create_private(path, "first") == "first"
    assert local_airflow._create_private(path, "second") == "first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


# --------------------------------------------------------------------------------------------------
# Preparing a home: the migration check, the record of what was applied, the MLflow UI component


def _metadata_db(path: Path, revision: str | None) -> dict[str, str]:
    """A SQLite file stamped at ``revision`` (as ``airflow db migrate`` leaves it); its environment."""
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        if revision:
            db.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
    return {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{path}"}


def test_the_migration_head_read_from_the_scripts_is_the_one_airflow_stamps() -> None:
    from airflow.utils.db import _REVISION_HEADS_MAP

    # The map's last entry is the head of the newest release: the one this Airflow migrates to.
    assert local_airflow.migrations_head() == list(_REVISION_HEADS_MAP.values())[-1]


def test_only_a_home_at_the_head_revision_skips_the_migration(tmp_path) -> None:
    head = local_airflow.migrations_head()
    assert head is not None
    absent = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'none' / 'airflow.db'}"}
    assert local_airflow.needs_migration(absent)
    assert not (tmp_path / "none").exists(), "checking must not create the database"
    assert local_airflow.needs_migration(_metadata_db(tmp_path / "empty" / "airflow.db", None))
    assert local_airflow.needs_migration(_metadata_db(tmp_path / "old" / "airflow.db", "4bc4d934e2bc"))
    (tmp_path / "junk.db").write_bytes(b"not a database")
    assert local_airflow.needs_migration(
        {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'junk.db'}"}
    )
    assert not local_airflow.needs_migration(_metadata_db(tmp_path / "current" / "airflow.db", head))
    # Another database than SQLite: not inspected, so `airflow db migrate` (idempotent) decides.
    assert local_airflow.needs_migration({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://db/airflow"})


@pytest.fixture
def project_settings(tmp_path, monkeypatch):
    """MLOPS_HOME and the Airflow home under the test's folder, the settings cache reset around."""
    from include.mlops.core import settings as settings_module

    for name in list(os.environ):
        if name.startswith(("MLOPS_", "AIRFLOW")) and not name.startswith("MLOPS_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    settings_module.settings.cache_clear()
    yield monkeypatch
    settings_module.settings.cache_clear()


def test_a_prepared_home_is_left_alone_without_starting_a_process(project_settings, monkeypatch) -> None:
    # What `make airflow` does before every command on a home that is ready: read, compare, nothing.
    import hashlib

    from include.mlops.core.settings import PROJECT_ROOT, settings

    env = local_airflow.airflow_env()
    head = local_airflow.migrations_head()
    _metadata_db(Path(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")), head)
    registry = Path(settings().feast_registry)
    registry.parent.mkdir(parents=True)
    registry.write_bytes(b"SQLite format 3\x00")
    record = {
        "airflow_settings": hashlib.sha256((PROJECT_ROOT / "airflow_settings.yaml").read_bytes()).hexdigest(),
        "feast_definitions": local_airflow.definitions_digest(),
    }
    (Path(env["AIRFLOW_HOME"]) / "run").mkdir(parents=True)
    (Path(env["AIRFLOW_HOME"]) / "run" / "prepared.json").write_text(json.dumps(record))

    def no_process(*args, **kwargs):
        raise AssertionError(f"a prepared home started {args[0]}")

    monkeypatch.setattr(subprocess, "run", no_process)
    lines: list[str] = []
    assert local_airflow.prepare(log=lines.append) == []
    assert lines == []


def test_the_feast_digest_follows_the_definitions_and_the_lake_they_read(project_settings, tmp_path) -> None:
    import shutil

    from include.mlops.core import settings as settings_module
    from include.mlops.core.settings import PROJECT_ROOT

    repo = tmp_path / "feature_repo"
    shutil.copytree(PROJECT_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    project_settings.setenv("MLOPS_FEAST_REPO", str(repo))
    settings_module.settings.cache_clear()
    first = local_airflow.definitions_digest()
    assert local_airflow.definitions_digest() == first
    (repo / "features.py").write_text((repo / "features.py").read_text() + "\n# changed\n")
    changed = local_airflow.definitions_digest()
    assert changed != first
    project_settings.setenv("MLOPS_LAKE_URL", str(tmp_path / "other-lake"))
    settings_module.settings.cache_clear()
    assert local_airflow.definitions_digest() != changed


def test_the_mlflow_ui_is_not_started_on_a_busy_port_or_a_remote_url(project_settings) -> None:
    import socket

    from include.mlops.core import settings as settings_module

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        project_settings.setenv("MLOPS_MLFLOW_UI_URL", f"http://127.0.0.1:{port}")
        settings_module.settings.cache_clear()
        assert "already in use" in local_airflow.start_mlflow_ui(local_airflow.airflow_env())
    project_settings.setenv("MLOPS_MLFLOW_UI_URL", "https://mlflow.example.com")
    settings_module.settings.cache_clear()
    assert local_airflow.mlflow_ui_address() is None
    assert "not on this machine" in local_airflow.start_mlflow_ui(local_airflow.airflow_env())
    assert not local_airflow.running(), "nothing was started"


SERVER_STAND_IN = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""
"""A parent that starts a child, as ``mlflow ui`` starts its server: both in one process group."""


def test_status_shows_the_mlflow_ui_and_down_stops_its_process_group(project_settings, capsys) -> None:
    from include.mlops.core.settings import settings

    ui = subprocess.Popen(
        [sys.executable, "-c", SERVER_STAND_IN], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    try:
        assert ui.stdout is not None
        server = int(ui.stdout.readline())
        pid_file = local_airflow.airflow_home() / "run" / f"{local_airflow.MLFLOW_UI}.pid"
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(str(ui.pid))
        assert local_airflow.main(["status"]) == 0
        assert f"mlflow-ui: pid {ui.pid} ({settings().mlflow_ui_url})" in capsys.readouterr().out

        assert local_airflow.down(timeout=20) == [local_airflow.MLFLOW_UI]
        assert ui.wait(timeout=20) is not None
        deadline = time.monotonic() + 20
        while local_airflow._alive(server):
            assert time.monotonic() < deadline, "the UI's server process outlived `down`"
            time.sleep(0.1)
        assert not pid_file.exists()
        assert local_airflow.main(["status"]) == 1
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, 9)
            ui.wait()
