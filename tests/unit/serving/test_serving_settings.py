"""The service's settings: defaults, bad values, who may be exposed, and a token that never shows."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from include.mlops.core import knobs
from include.mlops.core.serving_settings import TOKEN_SHOWN, ServingSettings
from include.mlops.core.settings import PROJECT_ROOT, SettingsError


def test_defaults_need_no_environment() -> None:
    s = ServingSettings.from_env({})
    assert s.token is None
    assert s.canary_share == 0.0 and s.shadow and s.request_log
    assert s.max_batch >= 1 and s.poll_seconds > 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MLOPS_SERVING_CANARY_SHARE", "1.5"),
        ("MLOPS_SERVING_CANARY_SHARE", "-0.1"),
        ("MLOPS_SERVING_POLL_SECONDS", "0"),
        ("MLOPS_SERVING_MAX_BATCH", "0"),
        ("MLOPS_SERVING_SHADOW", "maybe"),
        ("MLOPS_SERVING_MAX_PENDING", "many"),
        ("MLOPS_SERVING_TOKEN", "short"),
        ("MLOPS_SERVING_TOKEN", "has a space in it ok"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        ServingSettings.from_env({variable: value})


def test_a_bad_token_is_refused_without_showing_it() -> None:
    token = "tiny" + secrets.token_hex(2)
    with pytest.raises(SettingsError) as raised:
        ServingSettings.from_env({"MLOPS_SERVING_TOKEN": token})
    assert token not in str(raised.value)


def test_the_token_never_shows_in_settings_or_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    token = secrets.token_urlsafe(24)
    s = ServingSettings.from_env({"MLOPS_SERVING_TOKEN": token})
    assert s.token == token
    assert token not in repr(s)
    assert s.as_env()["MLOPS_SERVING_TOKEN"] == TOKEN_SHOWN
    monkeypatch.setenv("MLOPS_SERVING_TOKEN", token)
    shown = knobs.effective()
    assert shown["serving"]["MLOPS_SERVING_TOKEN"] == TOKEN_SHOWN
    assert token not in str(shown)
    assert "MLOPS_SERVING_TOKEN" in {variable for _, variable, _, _ in knobs.documented()}


def test_without_a_token_only_loopback_is_allowed_and_never_in_the_cluster() -> None:
    open_ = ServingSettings.from_env({})
    assert "loopback" in (open_.check_exposure("127.0.0.1", is_cluster=False) or "")
    with pytest.raises(SettingsError, match="loopback only"):
        open_.check_exposure("0.0.0.0", is_cluster=False)
    with pytest.raises(SettingsError, match="cluster profile needs MLOPS_SERVING_TOKEN"):
        open_.check_exposure("127.0.0.1", is_cluster=True)
    guarded = ServingSettings.from_env({"MLOPS_SERVING_TOKEN": secrets.token_hex(16)})
    assert guarded.check_exposure("0.0.0.0", is_cluster=True) is None


@pytest.mark.parametrize(
    ("env", "host"),
    [({"MLOPS_PROFILE": "cluster"}, "127.0.0.1"), ({}, "0.0.0.0")],
    ids=["cluster-without-token", "embedded-on-all-interfaces"],
)
def test_the_service_refuses_to_start_exposed_without_a_token(
    env: dict[str, str], host: str, tmp_path
) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_SERVING_")}
    environ.update(env, MLOPS_HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "include.mlops", "serve", "--host", host, "--port", "1"],
        cwd=PROJECT_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "the scoring service does not start" in done.stderr
    assert "MLOPS_SERVING_TOKEN" in done.stderr


def test_errors_shown_by_the_service_carry_no_passwords() -> None:
    from include.mlops.serving import redact_credentials

    secret = secrets.token_hex(8)
    text = (
        f"ConnectionError: http://mlops:{secret}@mlflow:5000/api; redis://:{secret}@redis:6379/0; "
        f"redis:6379,db=0,password={secret},ssl=true; postgresql://u:{secret}@db/feast"
    )
    shown = redact_credentials(text)
    assert secret not in shown
    assert "http://mlops:***@mlflow:5000/api" in shown and "password=***,ssl=true" in shown
