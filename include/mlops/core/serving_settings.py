"""The knobs of the real-time scoring service (``python -m include.mlops serve``).

One frozen object built from the environment (:meth:`ServingSettings.from_env`), like the policies
of :mod:`include.mlops.core.policies`: the bearer token of ``/predict``, how often the registry's
aliases are polled, the challenger's canary share and shadow scoring, the request limits and the
request log's queue and flushes. The deployment strategies are driven by the registry's aliases;
these knobs only say how much traffic the challenger gets and how.

Only the standard library is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from include.mlops.core.policies import _FromEnv
from include.mlops.core.settings import SettingsError, knob

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
"""Addresses only this machine can reach: the embedded profile binds one of them without a token."""

TOKEN_SHOWN = "***"
"""How the token appears wherever settings are printed: never its value."""


@dataclass(frozen=True)
class ServingSettings(_FromEnv):
    """How the scoring service authenticates, follows the registry, routes, limits and logs."""

    token: str | None = knob(
        "MLOPS_SERVING_TOKEN",
        "bearer token `/predict` requires (`Authorization: Bearer ...`); required in the cluster "
        "profile; unset in the embedded profile, the service binds loopback only",
        "unset",
        default=None,
        repr=False,
    )
    poll_seconds: float = knob(
        "MLOPS_SERVING_POLL_SECONDS",
        "how often the service reads the registry's aliases (a moved champion or challenger is "
        "loaded in the background and swapped in)",
        "`10`",
        default=10.0,
    )
    canary_share: float = knob(
        "MLOPS_SERVING_CANARY_SHARE",
        "share of customers (sticky, by a hash of `customer_id`) the challenger serves; `0` none",
        "`0`",
        default=0.0,
    )
    shadow: bool = knob(
        "MLOPS_SERVING_SHADOW",
        "whether the model that did not serve a payment (the challenger, or the champion for canary "
        "payments) scores it too, in the background, into the request log",
        "`true`",
        default=True,
    )
    max_batch: int = knob(
        "MLOPS_SERVING_MAX_BATCH", "payments one `/predict` request may carry", "`100`", default=100
    )
    max_body_bytes: int = knob(
        "MLOPS_SERVING_MAX_BODY_BYTES",
        "largest `/predict` request body accepted (413 above)",
        "`1048576`",
        default=1_048_576,
    )
    batch_wait_ms: float = knob(
        "MLOPS_SERVING_BATCH_WAIT_MS",
        "how long a scoring pass may wait for requests that usually come with the first one (as "
        "many as recent passes held); a request alone never waits; `0` never waits",
        "`2`",
        default=2.0,
    )
    max_pending: int = knob(
        "MLOPS_SERVING_MAX_PENDING",
        "payments waiting to be scored at most; above it requests get 503 (load shedding)",
        "`2000`",
        default=2000,
    )
    request_log: bool = knob(
        "MLOPS_SERVING_REQUEST_LOG",
        "whether scored payments (payment, features, scores, versions, latency) are written to the "
        "lake's `serving_requests` dataset, one partition per payment day",
        "`true`",
        default=True,
    )
    log_queue: int = knob(
        "MLOPS_SERVING_LOG_QUEUE",
        "payments waiting for shadow scoring or the request log at most; above it records are "
        "dropped with a warning (never the request)",
        "`20000`",
        default=20_000,
    )
    log_flush_seconds: float = knob(
        "MLOPS_SERVING_LOG_FLUSH_SECONDS",
        "the request log writes a new parquet file at least this often while payments arrive",
        "`30`",
        default=30.0,
    )
    log_batch_rows: int = knob(
        "MLOPS_SERVING_LOG_BATCH_ROWS",
        "the request log writes as soon as this many payments wait",
        "`5000`",
        default=5000,
    )

    def check(self) -> None:
        """Raise :class:`SettingsError` naming the variable when a value cannot work."""
        problems = []
        if not 0 <= self.canary_share <= 1:
            problems.append(f"MLOPS_SERVING_CANARY_SHARE={self.canary_share} must be between 0 and 1")
        if not 0 <= self.batch_wait_ms <= 1000:
            problems.append(f"MLOPS_SERVING_BATCH_WAIT_MS={self.batch_wait_ms} must be between 0 and 1000")
        if self.poll_seconds <= 0 or self.log_flush_seconds <= 0:
            problems.append("MLOPS_SERVING_POLL_SECONDS and MLOPS_SERVING_LOG_FLUSH_SECONDS must be positive")
        for name, value in (
            ("MLOPS_SERVING_MAX_BATCH", self.max_batch),
            ("MLOPS_SERVING_MAX_BODY_BYTES", self.max_body_bytes),
            ("MLOPS_SERVING_MAX_PENDING", self.max_pending),
            ("MLOPS_SERVING_LOG_QUEUE", self.log_queue),
            ("MLOPS_SERVING_LOG_BATCH_ROWS", self.log_batch_rows),
        ):
            if value < 1:
                problems.append(f"{name}={value} must be at least 1")
        if self.token is not None and (len(self.token) < 16 or any(c.isspace() for c in self.token)):
            # Never echo the value: the message reaches logs.
            problems.append("MLOPS_SERVING_TOKEN must be at least 16 characters without spaces")
        if problems:
            raise SettingsError("serving settings: " + "; ".join(problems))

    def as_env(self) -> dict[str, str]:
        """The values as their variables, the token masked (these are printed, and reach logs)."""
        env = super().as_env()
        if self.token is not None:
            env["MLOPS_SERVING_TOKEN"] = TOKEN_SHOWN
        else:
            env.pop("MLOPS_SERVING_TOKEN", None)
        return env

    def check_exposure(self, host: str, is_cluster: bool) -> str | None:
        """Whether the service may listen on ``host``: raises :class:`SettingsError` when it may not,
        returns a warning to log when it may but ``/predict`` is open (no token, loopback only)."""
        if self.token:
            return None
        if is_cluster:
            raise SettingsError(
                "the cluster profile needs MLOPS_SERVING_TOKEN: the scoring service refuses to serve "
                "/predict without authentication"
            )
        if host not in LOOPBACK_HOSTS:
            raise SettingsError(
                f"MLOPS_SERVING_TOKEN is unset: the scoring service listens on loopback only "
                f"({', '.join(LOOPBACK_HOSTS)}), not on {host!r}; set a token to listen there"
            )
        return (
            "MLOPS_SERVING_TOKEN is unset: /predict needs no authentication; listening on loopback "
            f"{host} only (embedded profile)"
        )
