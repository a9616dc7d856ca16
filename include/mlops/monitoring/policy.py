"""When drift calls for retraining: the pure rules (no I/O), unit-tested.

The policy (environment variables; defaults in brackets)
========================================================
* ``MLOPS_DRIFT_SHARE`` [0.3]: share of the judged key features that must drift for the day to
  count as feature drift (``>=``).
* ``MLOPS_DRIFT_PREDICTION`` [true]: whether drift of the champion's score alone counts.
* ``MLOPS_DRIFT_PERFORMANCE_DROP`` [0.2]: relative PR-AUC drop against training that counts
  (``(training - now) / training >=``).
* ``MLOPS_DRIFT_COOLDOWN_DAYS`` [7]: after a drift-triggered retrain requested for day ``T``, no
  other one for the days before ``T + cooldown`` (partition days, not wall-clock time: a backfill
  behaves like the days it replays). Keep it above the label delay (5 days) plus the training's
  out-of-time days, so that the next retrain can see labelled drifted days.
* ``MLOPS_DRIFT_SAMPLE_ROWS`` [50000]: at most this many payments of the day are compared.
* ``MLOPS_DRIFT_FEATURES`` [see :data:`DEFAULT_FEATURES`]: comma-separated key features.
* ``MLOPS_DRIFT_PSI`` [0.2]: PSI threshold of a continuous key feature.
* ``MLOPS_DRIFT_PSI_FLAGS`` [0.1]: PSI threshold of a 0/1 key feature (is_online, ...).
* ``MLOPS_DRIFT_PREDICTION_PSI`` [0.1]: PSI threshold of the prediction.
* ``MLOPS_DRIFT_PERFORMANCE_DAYS`` [7]: labelled days the performance is measured on.
* ``MLOPS_DRIFT_MIN_POSITIVES`` [30]: fewer frauds than this in those days: no performance signal.
* ``MLOPS_DRIFT_RETRAIN_TIMEOUT_HOURS`` [6]: how long (wall clock) a requested retrain counts as
  running when no model version carrying its reason has been registered yet (``train_model``'s
  run timeout). While it runs, no other drift retrain is requested, whatever the day.

A day with at least one signal (feature drift, prediction drift, performance drop) asks for a
retrain unless: the day is the one already recorded (a rerun never triggers twice), a later day's
retrain was already requested, the day is within the cooldown of the last request, or that
request's retrain is still running.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from include.mlops.core.settings import env_number

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np


DEFAULT_FEATURES: tuple[str, ...] = (
    "amount_to_customer_mean_7d",
    "amount_to_customer_mean_30d",
    "amount_zscore_30d",
    "amount_to_merchant_mean_30d",
    "customer_amount_mean_1d",
    "customer_online_share_1d",
    "is_online",
    "is_card_present",
    "is_foreign_country",
    "is_night",
)
"""Key features: how much a payment is against its customer's and merchant's habits, yesterday's
behaviour of the customer, and the payment's channel, country and time. They carry the model's
main signals and do not depend on how long the history is (counts and 30-day sums grow while the
lake fills up, which would look like drift)."""


SUPPRESSED_SAME_DAY = "already_requested"


SUPPRESSED_LATER_DAY = "later_day_requested"


SUPPRESSED_COOLDOWN = "cooldown"


SUPPRESSED_RUNNING = "retrain_running"


METHOD = "quantile_psi"
"""The drift statistic of every column (registered with Evidently by :func:`register_stattest`)."""
MAX_DISCRETE = 20
_PSI_BINS = 10


_PSI_FLOOR = 1e-4


_EPS = 1e-9  # a share or a drop computed as exactly the threshold counts


def _env_text(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


def _env_float(environ: Mapping[str, str], name: str, default: float) -> float:
    return env_number(name, default, float, environ)


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    return env_number(name, default, int, environ)


def _env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    text = _env_text(environ, name).lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={text!r}: use true or false")


@dataclass(frozen=True)
class Policy:
    """When drift calls for retraining (the ``MLOPS_DRIFT_*`` settings; see the module docstring)."""

    drift_share: float = 0.3
    prediction_counts: bool = True
    performance_drop: float = 0.2
    cooldown_days: int = 7
    sample_rows: int = 50_000
    features: tuple[str, ...] = DEFAULT_FEATURES
    psi_threshold: float = 0.2
    flag_psi_threshold: float = 0.1
    prediction_psi_threshold: float = 0.1
    performance_days: int = 7
    min_positives: int = 30
    retrain_timeout_hours: float = 6.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Policy:
        """The policy from the ``MLOPS_DRIFT_*`` variables of ``environ`` (default: the process's)."""
        env = os.environ if environ is None else environ
        features_text = _env_text(env, "MLOPS_DRIFT_FEATURES")
        features = (
            tuple(f.strip() for f in features_text.split(",") if f.strip())
            if features_text
            else DEFAULT_FEATURES
        )
        policy = cls(
            drift_share=_env_float(env, "MLOPS_DRIFT_SHARE", cls.drift_share),
            prediction_counts=_env_bool(env, "MLOPS_DRIFT_PREDICTION", cls.prediction_counts),
            performance_drop=_env_float(env, "MLOPS_DRIFT_PERFORMANCE_DROP", cls.performance_drop),
            cooldown_days=_env_int(env, "MLOPS_DRIFT_COOLDOWN_DAYS", cls.cooldown_days),
            sample_rows=_env_int(env, "MLOPS_DRIFT_SAMPLE_ROWS", cls.sample_rows),
            features=features,
            psi_threshold=_env_float(env, "MLOPS_DRIFT_PSI", cls.psi_threshold),
            flag_psi_threshold=_env_float(env, "MLOPS_DRIFT_PSI_FLAGS", cls.flag_psi_threshold),
            prediction_psi_threshold=_env_float(
                env, "MLOPS_DRIFT_PREDICTION_PSI", cls.prediction_psi_threshold
            ),
            performance_days=_env_int(env, "MLOPS_DRIFT_PERFORMANCE_DAYS", cls.performance_days),
            min_positives=_env_int(env, "MLOPS_DRIFT_MIN_POSITIVES", cls.min_positives),
            retrain_timeout_hours=_env_float(
                env, "MLOPS_DRIFT_RETRAIN_TIMEOUT_HOURS", cls.retrain_timeout_hours
            ),
        )
        policy.check()
        return policy

    def check(self) -> None:
        """Raise ``ValueError`` naming the setting when a value cannot work."""
        problems = []
        if not 0 < self.drift_share <= 1:
            problems.append(f"MLOPS_DRIFT_SHARE={self.drift_share} must be in (0, 1]")
        if self.performance_drop <= 0:
            problems.append(f"MLOPS_DRIFT_PERFORMANCE_DROP={self.performance_drop} must be positive")
        if self.cooldown_days < 0:
            problems.append(f"MLOPS_DRIFT_COOLDOWN_DAYS={self.cooldown_days} must not be negative")
        if self.sample_rows < 1000:
            problems.append(f"MLOPS_DRIFT_SAMPLE_ROWS={self.sample_rows} must be at least 1000")
        if not self.features:
            problems.append("MLOPS_DRIFT_FEATURES names no feature")
        for name, value in (
            ("MLOPS_DRIFT_PSI", self.psi_threshold),
            ("MLOPS_DRIFT_PSI_FLAGS", self.flag_psi_threshold),
            ("MLOPS_DRIFT_PREDICTION_PSI", self.prediction_psi_threshold),
        ):
            if value <= 0:
                problems.append(f"{name}={value} must be positive")
        if self.performance_days < 1:
            problems.append(f"MLOPS_DRIFT_PERFORMANCE_DAYS={self.performance_days} must be at least 1")
        if self.min_positives < 1:
            problems.append(f"MLOPS_DRIFT_MIN_POSITIVES={self.min_positives} must be at least 1")
        if self.retrain_timeout_hours < 0:
            problems.append(
                f"MLOPS_DRIFT_RETRAIN_TIMEOUT_HOURS={self.retrain_timeout_hours} must not be negative"
            )
        if problems:
            raise ValueError("drift policy: " + "; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        """The policy as JSON-compatible values."""
        return {**asdict(self), "features": list(self.features)}


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift: the statistic, its threshold, its score and Evidently's verdict."""

    column: str
    score: float | None
    threshold: float
    drifted: bool
    method: str = METHOD
    note: str = ""


@dataclass(frozen=True)
class DriftSummary:
    """The key features' drift and the prediction's drift of one day."""

    columns: tuple[ColumnDrift, ...]
    prediction: ColumnDrift | None = None
    skipped: tuple[str, ...] = ()

    @property
    def judged(self) -> int:
        """How many key features were compared."""
        return len(self.columns)

    @property
    def drifted(self) -> tuple[ColumnDrift, ...]:
        """The drifted key features, highest score first."""
        found = [c for c in self.columns if c.drifted]
        return tuple(sorted(found, key=lambda c: -(c.score if c.score is not None else math.inf)))

    @property
    def share(self) -> float:
        """Share of the judged key features that drifted (0 when none was judged)."""
        return len(self.drifted) / self.judged if self.judged else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON-compatible values."""
        return {
            "judged": self.judged,
            "drifted": len(self.drifted),
            "share": self.share,
            "columns": [asdict(c) for c in self.columns],
            "prediction": asdict(self.prediction) if self.prediction else None,
            "skipped": list(self.skipped),
        }


@dataclass(frozen=True)
class Performance:
    """The model's performance on the labelled days that it scored, against its training run."""

    days: tuple[str, ...] = ()
    rows: int = 0
    positives: int = 0
    pr_auc: float | None = None
    recall_at_1pct_fpr: float | None = None
    baseline_pr_auc: float | None = None
    baseline_recall_at_1pct_fpr: float | None = None
    label_coverage: float | None = None
    note: str = ""

    @property
    def relative_drop(self) -> float | None:
        """``(training PR-AUC - PR-AUC now) / training PR-AUC``; ``None`` when either is unknown."""
        if self.pr_auc is None or self.baseline_pr_auc is None or not self.baseline_pr_auc > 0:
            return None
        if not (math.isfinite(self.pr_auc) and math.isfinite(self.baseline_pr_auc)):
            return None
        return (self.baseline_pr_auc - self.pr_auc) / self.baseline_pr_auc

    def as_dict(self) -> dict[str, Any]:
        """The performance as JSON-compatible values."""
        return {**asdict(self), "days": list(self.days), "relative_drop": self.relative_drop}


@dataclass(frozen=True)
class Verdict:
    """What :func:`decide` concluded for one day, and why."""

    day: dt.date
    retrain: bool
    signals: tuple[str, ...]
    reason: str
    explanation: str
    suppressed_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The verdict as JSON-compatible values."""
        return {
            "day": self.day.isoformat(),
            "retrain": self.retrain,
            "signals": list(self.signals),
            "reason": self.reason,
            "explanation": self.explanation,
            "suppressed_by": self.suppressed_by,
        }


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _feature_text(summary: DriftSummary, limit: int = 6) -> str:
    drifted = summary.drifted
    text = f"{len(drifted)}/{summary.judged} key features drifted"
    if drifted:
        shown = ", ".join(f"{c.column} {_fmt(c.score)}" for c in drifted[:limit])
        text += f" ({shown}{', ...' if len(drifted) > limit else ''})"
    return text


def _performance_text(performance: Performance) -> str:
    if performance.pr_auc is None:
        return f"performance not measured ({performance.note or 'no fully labelled day yet'})"
    span = f"{performance.days[0]}..{performance.days[-1]}" if performance.days else "?"
    drop = performance.relative_drop
    change = "" if drop is None else f", {-drop:+.0%}"
    return (
        f"PR-AUC {_fmt(performance.pr_auc, 3)} vs {_fmt(performance.baseline_pr_auc, 3)} at training"
        f"{change} on {span} ({performance.positives} frauds)"
    )


def decide(
    drift_summary: DriftSummary,
    performance: Performance,
    last_trigger_day: dt.date | None,
    day: dt.date,
    policy: Policy,
    retrain_running: bool = False,
) -> Verdict:
    """Decide whether ``day`` calls for a retrain. Pure: the inputs decide, nothing is read.

    Signals: ``features`` (share of drifted key features ``>= policy.drift_share``),
    ``prediction`` (the score drifted and ``policy.prediction_counts``), ``performance`` (relative
    PR-AUC drop ``>= policy.performance_drop`` with at least ``policy.min_positives`` frauds).
    With a signal the verdict is to retrain, unless ``last_trigger_day`` (the day of the last
    drift-triggered retrain request) is ``day`` itself or a later day, or fewer than
    ``policy.cooldown_days`` days before ``day``, or ``retrain_running`` (that retrain has not
    registered a model yet).
    """
    signals: list[str] = []
    parts: list[str] = []
    if drift_summary.judged and drift_summary.share >= policy.drift_share - _EPS:
        signals.append("features")
    if drift_summary.drifted:
        parts.append(_feature_text(drift_summary))
    prediction = drift_summary.prediction
    if prediction is not None and prediction.drifted:
        if policy.prediction_counts:
            signals.append("prediction")
        parts.append(f"prediction drift {_fmt(prediction.score)}")
    drop = performance.relative_drop
    if (
        drop is not None
        and performance.positives >= policy.min_positives
        and drop >= policy.performance_drop - _EPS
    ):
        signals.append("performance")
        parts.append(_performance_text(performance))

    measured = [
        f"{_feature_text(drift_summary)} (a share of {policy.drift_share:g} counts)",
        "prediction PSI "
        + (
            f"{_fmt(prediction.score)} (threshold {prediction.threshold:g})"
            if prediction is not None
            else "not measured"
        ),
        _performance_text(performance),
    ]
    if not signals:
        return Verdict(
            day=day,
            retrain=False,
            signals=(),
            reason=f"no drift on {day}",
            explanation=f"no drift on {day}: " + "; ".join(measured),
        )

    reason = f"drift on {day}: " + "; ".join(parts)
    suppressed: str | None = None
    why = ""
    if last_trigger_day is not None:
        gap = (day - last_trigger_day).days
        if gap == 0:
            suppressed, why = SUPPRESSED_SAME_DAY, f"a retrain was already requested for {day}"
        elif gap < 0:
            suppressed, why = (
                SUPPRESSED_LATER_DAY,
                f"a retrain was already requested for a later day ({last_trigger_day})",
            )
        elif gap < policy.cooldown_days:
            next_day = last_trigger_day + dt.timedelta(days=policy.cooldown_days)
            suppressed, why = (
                SUPPRESSED_COOLDOWN,
                f"cooldown: the last drift retrain was requested for {last_trigger_day}, {gap} day(s) "
                f"before (cooldown {policy.cooldown_days} days, next one allowed from {next_day})",
            )
        elif retrain_running:
            suppressed, why = (
                SUPPRESSED_RUNNING,
                f"the retrain requested for {last_trigger_day} has not registered a model yet",
            )
    if suppressed is not None:
        return Verdict(
            day=day,
            retrain=False,
            signals=tuple(signals),
            reason=reason,
            explanation=f"no retrain: {why}; {reason}",
            suppressed_by=suppressed,
        )
    return Verdict(
        day=day,
        retrain=True,
        signals=tuple(signals),
        reason=reason,
        explanation=f"retrain ({', '.join(signals)}): {reason}",
    )


def psi(reference: np.ndarray, current: np.ndarray, bins: int = _PSI_BINS) -> float:
    """Population stability index of ``current`` against ``reference`` (NaNs dropped).

    A column with at most 20 distinct reference values (a 0/1 flag, an hour) is compared value by
    value; otherwise over the reference's deciles (``bins`` quantile bins), so that the bins hold
    equal reference mass whatever the scale or the tails. Empty cells count as ``1e-4``.
    """
    import numpy as np

    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if len(ref) == 0 or len(cur) == 0:
        return float("nan")
    values = np.unique(ref)
    if len(values) <= MAX_DISCRETE:
        keys = np.union1d(values, np.unique(cur))
        ref_share = np.searchsorted(keys, ref)
        cur_share = np.searchsorted(keys, cur)
        p = np.bincount(ref_share, minlength=len(keys)) / len(ref)
        q = np.bincount(cur_share, minlength=len(keys)) / len(cur)
    else:
        edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1))[1:-1])
        p = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1) / len(ref)
        q = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1) / len(cur)
    p, q = np.clip(p, _PSI_FLOOR, None), np.clip(q, _PSI_FLOOR, None)
    return float(np.sum((q - p) * np.log(q / p)))
