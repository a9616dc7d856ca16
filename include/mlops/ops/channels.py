"""Where alerts go: the local alert log, e-mail through SMTP, a webhook (Slack-compatible JSON).

:func:`deliver` sends one :class:`~.alerts.Alert` to every channel of ``MLOPS_ALERT_CHANNELS``. A
channel that fails is logged as a warning and the others still send: an alert never fails the
task it reports on.

* ``log``: one JSON line per alert appended to ``$MLOPS_HOME/alerts/alerts.jsonl`` (one
  ``write`` of the whole line under an exclusive ``flock``, so concurrent tasks never interleave
  or tear lines);
* ``email``: through the SMTP provider's ``SmtpHook`` and the Airflow connection
  ``MLOPS_ALERT_SMTP_CONN_ID``;
* ``webhook``: ``POST`` of ``{"text": ..., "alert": {...}}`` (``text`` is what Slack shows) to the
  URL held by the Airflow connection ``MLOPS_ALERT_WEBHOOK_CONN_ID``: its host, when it is a full
  URL, as the HTTP provider reads it.

Airflow is imported inside the functions that need a connection.
"""

from __future__ import annotations

import contextlib
import fcntl
import html
import json
import logging
import os
import urllib.request
from typing import TYPE_CHECKING, Any

from include.mlops.core.alerting import OpsSettings
from include.mlops.core.settings import resolve_settings

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from include.mlops.core.settings import Settings
    from include.mlops.ops.alerts import Alert

logger = logging.getLogger(__name__)

ALERT_LOG = "alerts/alerts.jsonl"
"""The alert log, relative to ``MLOPS_HOME``."""


class ChannelError(RuntimeError):
    """A channel could not deliver an alert (the reason is the message)."""


def alert_log_path(settings: Settings | None = None) -> Path:
    """The alert log of the settings' ``MLOPS_HOME``."""
    return resolve_settings(settings).home / ALERT_LOG


def append_alert_log(alert: Alert, settings: Settings | None = None) -> Path:
    """Append ``alert`` as one JSON line to the alert log; returns the log's path."""
    path = alert_log_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(alert.as_dict(), default=str, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    return path


def read_alert_log(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every alert in the log, oldest first (a line being written is left out)."""
    path = alert_log_path(settings)
    if not path.exists():
        return []
    alerts = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            alerts.append(json.loads(line))
    return alerts


def webhook_url(conn: Any) -> str:
    """The URL an Airflow connection names: its host when that is a full URL, else built from its
    scheme (``schema``, default https), host, port and the ``endpoint`` extra."""
    host = (conn.host or "").strip()
    if "://" in host:
        return host
    if not host:
        raise ChannelError(f"connection {conn.conn_id!r} has no host: put the webhook URL there")
    scheme = (conn.schema or "https").strip()
    port = f":{conn.port}" if conn.port else ""
    endpoint = str((conn.extra_dejson or {}).get("endpoint", "")).lstrip("/")
    return f"{scheme}://{host}{port}/{endpoint}"


def post_webhook(url: str, alert: Alert, timeout: float) -> int:
    """POST ``alert`` as JSON to ``url``; the HTTP status, or :class:`ChannelError` on an error."""
    body = json.dumps({"text": alert.text, "alert": alert.as_dict()}, default=str).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json; charset=utf-8"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except OSError as exc:  # URLError and HTTPError are OSErrors
        # The URL may carry a credential (Slack's does): name the host only.
        host = urllib.request.urlparse(url).hostname
        raise ChannelError(f"webhook POST to {host} failed: {exc}") from None


def _send_log(alert: Alert, ops: OpsSettings, s: Settings) -> None:
    append_alert_log(alert, s)


def _send_webhook(alert: Alert, ops: OpsSettings, s: Settings) -> None:
    from airflow.sdk import BaseHook

    post_webhook(webhook_url(BaseHook.get_connection(ops.webhook_conn_id)), alert, ops.timeout_seconds)


def email_body(alert: Alert) -> str:
    """The e-mail's HTML: the alert's text, escaped, as preformatted text."""
    return f'<pre style="font-family: monospace; white-space: pre-wrap">{html.escape(alert.text)}</pre>'


def _send_email(alert: Alert, ops: OpsSettings, s: Settings) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with SmtpHook(smtp_conn_id=ops.smtp_conn_id) as hook:
        hook.send_email_smtp(
            to=list(ops.email_to),
            from_email=ops.email_from,
            subject=alert.subject,
            html_content=email_body(alert),
        )


SENDERS: dict[str, Callable[[Alert, OpsSettings, Settings], None]] = {
    "log": _send_log,
    "email": _send_email,
    "webhook": _send_webhook,
}
"""The sender of each channel of :data:`~include.mlops.core.alerting.CHANNELS`."""


def deliver(alert: Alert, ops: OpsSettings | None = None, settings: Settings | None = None) -> dict[str, str]:
    """Send ``alert`` to every configured channel; a failing channel is a warning, never an error.

    Returns ``{channel: "sent" | "failed: <why>"}``.
    """
    ops = ops or OpsSettings.from_env()
    s = resolve_settings(settings)
    results: dict[str, str] = {}
    for channel in ops.active_channels:
        try:
            SENDERS[channel](alert, ops, s)
            results[channel] = "sent"
        except Exception as exc:
            logger.warning("alert %r was not sent by the %s channel: %s", alert.title, channel, exc)
            results[channel] = f"failed: {exc}"
    if results:
        logger.info("alert %r: %s", alert.title, ", ".join(f"{k} {v}" for k, v in results.items()))
    return results
