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
