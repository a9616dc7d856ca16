"""The knobs of operations: where alerts go, when a late drop alerts, what the metrics keep.

One frozen object built from the environment (:meth:`OpsSettings.from_env`), like the policies of
:mod:`include.mlops.core.policies`. Secrets never live here: the SMTP server and the webhook URL
(a Slack incoming webhook URL is a credential) are Airflow connections, named by these settings and
resolved by Airflow (its metadata database, ``AIRFLOW_CONN_*`` variables or a secrets backend).

Only the standard library is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from include.mlops.core.policies import _FromEnv
from include.mlops.core.settings import SettingsError, knob

if TYPE_CHECKING:
    from pathlib import Path

    from include.mlops.core.settings import Settings

CHANNELS = ("log", "email", "webhook")
"""The alert channels: the local alert log, e-mail through SMTP, a JSON POST (Slack-compatible)."""

OFF = ("none", "off")
"""Values that turn a list or a path setting off."""


@dataclass(frozen=True)
class OpsSettings(_FromEnv):
    """Where alerts go, how long a channel may take, the drops' deadline and the metrics' window."""

    channels: tuple[str, ...] = knob(
        "MLOPS_ALERT_CHANNELS",
        "where alerts go, comma-separated: `log` (JSON lines in `$MLOPS_HOME/alerts/alerts.jsonl`), "
        "`email` (SMTP), `webhook` (JSON POST, Slack-compatible); `none` sends nothing",
        "`log`",
        default=("log",),
    )
    email_to: tuple[str, ...] = knob(
        "MLOPS_ALERT_EMAIL_TO", "recipients of the `email` channel, comma-separated", "unset", default=()
    )
    email_from: str = knob(
        "MLOPS_ALERT_EMAIL_FROM",
        "sender of the `email` channel",
        "`mlops-alerts@localhost`",
        default="mlops-alerts@localhost",
    )
    smtp_conn_id: str = knob(
        "MLOPS_ALERT_SMTP_CONN_ID",
        "Airflow connection of the SMTP server (`airflow_settings.yaml`: localhost:25, no credentials)",
        "`smtp_default`",
        default="smtp_default",
    )
    webhook_conn_id: str = knob(
        "MLOPS_ALERT_WEBHOOK_CONN_ID",
        "Airflow connection whose host is the webhook URL (e.g. a Slack incoming webhook)",
        "`mlops_alert_webhook`",
        default="mlops_alert_webhook",
    )
    timeout_seconds: float = knob(
        "MLOPS_ALERT_TIMEOUT",
        "seconds a webhook POST may take before it is given up",
        "`10`",
        default=10.0,
    )
    drop_deadline_hours: float = knob(
        "MLOPS_ALERT_DROP_DEADLINE_HOURS",
        "hours after a day's ingestion run is queued (00:00 UTC the day after) by which its drop must "
        "have landed; then an alert, while the sensor keeps waiting",
        "`6`",
        default=6.0,
    )
    metrics_retention_days: int = knob(
        "MLOPS_METRICS_RETENTION_DAYS",
        "days back from the newest day in the lake that per-day metrics (label `day`) cover",
        "`14`",
        default=14,
    )
    metrics_textfile_dir: str = knob(
        "MLOPS_METRICS_TEXTFILE_DIR",
        "folder of the node-exporter textfiles `mlops_lake.prom` and `mlops_registry.prom`, rewritten "
        "after each task that changes a fact; `none` turns them off",
        "`$MLOPS_HOME/metrics` (embedded), `none` (cluster)",
        default="",
    )

    @property
    def active_channels(self) -> tuple[str, ...]:
        """The channels alerts go to (none when ``MLOPS_ALERT_CHANNELS=none``)."""
        return tuple(c for c in self.channels if c.lower() not in OFF)

    def textfile_dir(self, s: Settings) -> Path | None:
        """The textfiles' folder: the setting, else ``$MLOPS_HOME/metrics`` in the embedded profile."""
        from pathlib import Path

        text = self.metrics_textfile_dir.strip()
        if text.lower() in OFF or (not text and s.is_cluster):
            return None
        return Path(text).expanduser() if text else s.home / "metrics"

    def check(self) -> None:
        problems = [
            f"MLOPS_ALERT_CHANNELS: unknown channel {c!r} (expected {', '.join(CHANNELS)} or none)"
            for c in self.active_channels
            if c not in CHANNELS
        ]
        if "email" in self.active_channels and not self.email_to:
            problems.append("MLOPS_ALERT_CHANNELS has email but MLOPS_ALERT_EMAIL_TO names no recipient")
        for name, value in (
            ("MLOPS_ALERT_TIMEOUT", self.timeout_seconds),
            ("MLOPS_ALERT_DROP_DEADLINE_HOURS", self.drop_deadline_hours),
        ):
            if not value > 0:
                problems.append(f"{name}={value} must be positive")
        if self.metrics_retention_days < 1:
            problems.append(f"MLOPS_METRICS_RETENTION_DAYS={self.metrics_retention_days} must be at least 1")
        if problems:
            raise SettingsError("operations settings: " + "; ".join(problems))
