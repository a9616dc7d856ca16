"""The operations settings: channels, recipients, the drops' deadline, the metrics' window and textfiles."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from include.mlops.core import knobs
from include.mlops.core.alerting import OpsSettings
from include.mlops.core.settings import SettingsError, load_settings

if TYPE_CHECKING:
    from pathlib import Path


def test_the_embedded_default_sends_to_the_alert_log_only() -> None:
    ops = OpsSettings.from_env({})
    assert ops.active_channels == ("log",)
    assert ops.smtp_conn_id == "smtp_default" and ops.webhook_conn_id == "mlops_alert_webhook"
    assert ops.drop_deadline_hours == 6.0 and ops.metrics_retention_days == 14


def test_channels_and_recipients_come_from_the_environment() -> None:
    ops = OpsSettings.from_env(
        {"MLOPS_ALERT_CHANNELS": "log, email,webhook", "MLOPS_ALERT_EMAIL_TO": "a@x.org, b@x.org"}
    )
    assert ops.active_channels == ("log", "email", "webhook")
    assert ops.email_to == ("a@x.org", "b@x.org")
    assert OpsSettings.from_env({"MLOPS_ALERT_CHANNELS": "none"}).active_channels == ()


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"MLOPS_ALERT_CHANNELS": "log,pager"}, "unknown channel 'pager'"),
        ({"MLOPS_ALERT_CHANNELS": "email"}, "MLOPS_ALERT_EMAIL_TO names no recipient"),
        ({"MLOPS_ALERT_DROP_DEADLINE_HOURS": "0"}, "MLOPS_ALERT_DROP_DEADLINE_HOURS=0.0 must be positive"),
        ({"MLOPS_ALERT_TIMEOUT": "-1"}, "MLOPS_ALERT_TIMEOUT=-1.0 must be positive"),
        ({"MLOPS_METRICS_RETENTION_DAYS": "0"}, "MLOPS_METRICS_RETENTION_DAYS=0 must be at least 1"),
        ({"MLOPS_METRICS_RETENTION_DAYS": "two"}, "MLOPS_METRICS_RETENTION_DAYS='two' is not an integer"),
    ],
)
def test_a_setting_that_cannot_work_is_refused_by_name(environ: dict, named: str) -> None:
    with pytest.raises(SettingsError, match=named.replace("(", r"\(").replace(")", r"\)")):
        OpsSettings.from_env(environ)


def test_textfiles_live_under_the_home_when_embedded_and_are_off_in_the_cluster(tmp_path: Path) -> None:
    embedded = load_settings({"MLOPS_HOME": str(tmp_path)})
    cluster = load_settings({"MLOPS_HOME": str(tmp_path), "MLOPS_PROFILE": "cluster"})
    assert OpsSettings.from_env({}).textfile_dir(embedded) == tmp_path / "metrics"
    assert OpsSettings.from_env({}).textfile_dir(cluster) is None
    chosen = OpsSettings.from_env({"MLOPS_METRICS_TEXTFILE_DIR": str(tmp_path / "node")})
    assert chosen.textfile_dir(cluster) == tmp_path / "node"
    assert OpsSettings.from_env({"MLOPS_METRICS_TEXTFILE_DIR": "none"}).textfile_dir(embedded) is None


def test_the_operations_settings_are_in_the_catalogue() -> None:
    documented = {variable: concern for concern, variable, _, _ in knobs.documented()}
    for variable in (
        "MLOPS_ALERT_CHANNELS",
        "MLOPS_ALERT_DROP_DEADLINE_HOURS",
        "MLOPS_METRICS_RETENTION_DAYS",
    ):
        assert documented[variable] == "ops"
    assert knobs.effective()["ops"]["MLOPS_ALERT_CHANNELS"] == "log"
