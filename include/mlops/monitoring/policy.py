"""When drift calls for retraining: the pure rules (no I/O), unit-tested.

A day has up to three **signals**:

* ``features``: the share of drifted key features is at least ``drift_share``;
* ``prediction``: the champion's score drifted (counts only when ``prediction_counts``);
* ``performance``: the PR-AUC on fully labelled days dropped, relative to training, by at least
  ``performance_drop``, measured on at least ``min_positives`` frauds.

A day with a signal asks for a retrain unless it is **suppressed**: the day is the one already
recorded (a rerun never triggers twice), a later day's retrain was already requested, the day is
within the cooldown of the last request, or that request's retrain is still running.

A rerun of the day whose recorded request is still **pending** (recorded, but ``train_model`` was
never triggered: the check's run failed before its trigger) asks again, with the recorded
reason, whatever the day's signals now: the verdict is a **reissue** and records nothing new.

The cooldown counts partition days, not wall-clock time, so that a backfill behaves like the days
it replays.

A retrain learns the drifted world (:func:`retrain_plan`): the request is made on the drifted day
``D``, but ``train_model`` waits (deferred) until the labels of ``D``'s first
``retrain_labelled_days`` days have all arrived (the label delay is 5 days). It is judged on the
newest ``retrain_oot_days`` of them, against the champion on the same drifted days, and learns
from the others and the ``retrain_window_days`` days up to them: what changed comes from the
drifted days, what did not (card testing, compromised merchants) from all of them. Its reference
sample, drawn from its out-of-time days, is drifted data: once it is champion, the drift monitor
compares each day with the new world. While it waits, the request counts as running, so later
drifted days do not ask again.

Every column is judged with the population stability index over the reference's deciles
(:func:`psi`, :data:`METHOD`).

The knobs are :class:`~include.mlops.core.policies.DriftPolicy` (``MLOPS_DRIFT_*``).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from include.mlops.core.policies import DriftPolicy


SUPPRESSED_SAME_DAY = "already_requested"
"""Suppression: a retrain was already requested for this very day (a rerun)."""

SUPPRESSED_LATER_DAY = "later_day_requested"
"""Suppression: a retrain was already requested for a later day (a backfill replaying the past)."""

SUPPRESSED_COOLDOWN = "cooldown"
"""Suppression: the last request was fewer than ``cooldown_days`` partition days before."""

SUPPRESSED_RUNNING = "retrain_running"
"""Suppression: the last requested retrain has not registered a model yet."""

METHOD = "quantile_psi"
"""The drift statistic of every column (registered with Evidently under this name)."""

MAX_DISCRETE = 20
"""A column with at most this many distinct reference values is compared value by value."""

_PSI_BINS = 10  # deciles of the reference
_PSI_FLOOR = 1e-4  # an empty cell would make the logarithm infinite
_EPS = 1e-9  # a share or a drop computed as exactly the threshold counts


# --------------------------------------------------------------------------------------------------
# What a day's check measured, and what it concluded


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
        """The drifted key features, highest score first (a column without a score first of all)."""
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
    reissue: bool = False
    """The retrain is the day's recorded request, never triggered, asked for again."""

    def as_dict(self) -> dict[str, Any]:
        """The verdict as JSON-compatible values."""
        return {
            "day": self.day.isoformat(),
            "retrain": self.retrain,
            "signals": list(self.signals),
            "reason": self.reason,
            "explanation": self.explanation,
            "suppressed_by": self.suppressed_by,
            "reissue": self.reissue,
        }


@dataclass(frozen=True)
class RetrainPlan:
    """What a drift retrain requested on ``day`` trains on: ``train_model``'s conf."""

    day: dt.date
    as_of: dt.date
    """The day whose labels complete the drifted days: the retrain waits for it, then trains."""
    window_days: int
    oot_days: int

    @property
    def wait_days(self) -> int:
        """Partition days between the request and the day the retrain can train."""
        return (self.as_of - self.day).days

    def as_conf(self, reason: str) -> dict[str, Any]:
        """The ``train_model`` conf of the retrain."""
        return {
            "reason": reason,
            "as_of": self.as_of.isoformat(),
            "window_days": self.window_days,
            "oot_days": self.oot_days,
        }


def retrain_plan(day: dt.date, policy: DriftPolicy) -> RetrainPlan:
    """The drift retrain of ``day``: trained once ``day`` and the days after it are labelled.

    ``retrain_labelled_days`` days from ``day`` on are fully labelled when the labels partition of
    their last day plus :data:`~include.mlops.core.schema.MAX_LABEL_DELAY_DAYS` is in. Training as
    of that day (the training window's arithmetic, :func:`include.mlops.training.training_window`)
    is judged on the newest ``retrain_oot_days`` of them and learns from the
    ``retrain_window_days`` days before those, the other drifted days included.
    """
    from include.mlops.core.schema import MAX_LABEL_DELAY_DAYS

    as_of = day + dt.timedelta(days=policy.retrain_labelled_days - 1 + MAX_LABEL_DELAY_DAYS)
    return RetrainPlan(day, as_of, policy.retrain_window_days, policy.retrain_oot_days)


# --------------------------------------------------------------------------------------------------
# The decision


@dataclass(frozen=True)
class _Signals:
    """The signals a day raised, and the reason's parts that name what moved."""

    names: tuple[str, ...]
    parts: tuple[str, ...]


@dataclass(frozen=True)
class _Suppression:
    """Why a day with a signal does not ask for a retrain."""

    by: str
    why: str


def decide(
    drift_summary: DriftSummary,
    performance: Performance,
    last_trigger_day: dt.date | None,
    day: dt.date,
    policy: DriftPolicy,
    retrain_running: bool = False,
    pending_reason: str | None = None,
) -> Verdict:
    """Decide whether ``day`` calls for a retrain. Pure: the inputs decide, nothing is read.

    Signals: ``features`` (share of drifted key features ``>= policy.drift_share``),
    ``prediction`` (the score drifted and ``policy.prediction_counts``), ``performance`` (relative
    PR-AUC drop ``>= policy.performance_drop`` with at least ``policy.min_positives`` frauds).
    With a signal the verdict is to retrain, unless ``last_trigger_day`` (the day of the last
    drift-triggered retrain request) is ``day`` itself or a later day, or fewer than
    ``policy.cooldown_days`` days before ``day``, or ``retrain_running`` (that retrain has not
    registered a model yet).

    ``pending_reason``: the reason of the last request when it is still pending (recorded, never
    triggered). On that request's own day the verdict is then to retrain again with that reason
    (``reissue``), whatever the signals.
    """
    signals = _signals(drift_summary, performance, policy)
    if pending_reason is not None and last_trigger_day == day:
        return _reissue(day, signals, pending_reason)
    if not signals.names:
        measured = _measured(drift_summary, performance, policy)
        return Verdict(
            day=day,
            retrain=False,
            signals=(),
            reason=f"no drift on {day}",
            explanation=f"no drift on {day}: {measured}",
        )
    reason = f"drift on {day}: " + "; ".join(signals.parts)
    suppression = _suppression(last_trigger_day, day, policy, retrain_running)
    if suppression is not None:
        pending = (
            f" (that request was never triggered: rerun the check of {last_trigger_day} to trigger it)"
            if pending_reason is not None
            else ""
        )
        return Verdict(
            day=day,
            retrain=False,
            signals=signals.names,
            reason=reason,
            explanation=f"no retrain: {suppression.why}{pending}; {reason}",
            suppressed_by=suppression.by,
        )
    return Verdict(
        day=day,
        retrain=True,
        signals=signals.names,
        reason=reason,
        explanation=f"retrain ({', '.join(signals.names)}): {reason}",
    )


def _reissue(day: dt.date, signals: _Signals, pending_reason: str) -> Verdict:
    """The retrain of ``day``'s pending request, asked for again with its recorded reason."""
    return Verdict(
        day=day,
        retrain=True,
        signals=signals.names,
        reason=pending_reason,
        explanation=(
            f"retrain again: the retrain requested for {day} was recorded but never triggered; "
            f"{pending_reason}"
        ),
        reissue=True,
    )


def _signals(summary: DriftSummary, performance: Performance, policy: DriftPolicy) -> _Signals:
    names: list[str] = []
    parts: list[str] = []
    if summary.judged and summary.share >= policy.drift_share - _EPS:
        names.append("features")
    # Drifted features are named even below the share: they explain the other signals.
    if summary.drifted:
        parts.append(_feature_text(summary))
    prediction = summary.prediction
    if prediction is not None and prediction.drifted:
        if policy.prediction_counts:
            names.append("prediction")
        parts.append(f"prediction drift {_fmt(prediction.score)}")
    drop = performance.relative_drop
    # Too few frauds make the PR-AUC noise: no signal, whatever the drop.
    if (
        drop is not None
        and performance.positives >= policy.min_positives
        and drop >= policy.performance_drop - _EPS
    ):
        names.append("performance")
        parts.append(_performance_text(performance))
    return _Signals(tuple(names), tuple(parts))


def _measured(summary: DriftSummary, performance: Performance, policy: DriftPolicy) -> str:
    """Everything measured, for a quiet day's explanation (what was looked at, not only what moved)."""
    prediction = summary.prediction
    prediction_text = (
        f"{_fmt(prediction.score)} (threshold {prediction.threshold:g})"
        if prediction is not None
        else "not measured"
    )
    return "; ".join(
        [
            f"{_feature_text(summary)} (a share of {policy.drift_share:g} counts)",
            f"prediction PSI {prediction_text}",
            _performance_text(performance),
        ]
    )


def _suppression(
    last_trigger_day: dt.date | None, day: dt.date, policy: DriftPolicy, retrain_running: bool
) -> _Suppression | None:
    if last_trigger_day is None:
        return None
    gap = (day - last_trigger_day).days
    if gap == 0:
        return _Suppression(SUPPRESSED_SAME_DAY, f"a retrain was already requested for {day}")
    if gap < 0:
        return _Suppression(
            SUPPRESSED_LATER_DAY, f"a retrain was already requested for a later day ({last_trigger_day})"
        )
    if gap < policy.cooldown_days:
        next_day = last_trigger_day + dt.timedelta(days=policy.cooldown_days)
        return _Suppression(
            SUPPRESSED_COOLDOWN,
            f"cooldown: the last drift retrain was requested for {last_trigger_day}, {gap} day(s) "
            f"before (cooldown {policy.cooldown_days} days, next one allowed from {next_day})",
        )
    if retrain_running:
        return _Suppression(
            SUPPRESSED_RUNNING, f"the retrain requested for {last_trigger_day} has not registered a model yet"
        )
    return None


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


# --------------------------------------------------------------------------------------------------
# The statistic


def psi(reference: np.ndarray, current: np.ndarray, bins: int = _PSI_BINS) -> float:
    """Population stability index of ``current`` against ``reference`` (NaNs dropped).

    A column with at most :data:`MAX_DISCRETE` distinct reference values (a 0/1 flag, an hour) is
    compared value by value; otherwise over the reference's deciles (``bins`` quantile bins), so
    that the bins hold equal reference mass whatever the scale or the tails. Empty cells count as
    ``1e-4``. NaN when either side has no value.
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
        p = np.bincount(np.searchsorted(keys, ref), minlength=len(keys)) / len(ref)
        q = np.bincount(np.searchsorted(keys, cur), minlength=len(keys)) / len(cur)
    else:
        edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1))[1:-1])
        p = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1) / len(ref)
        q = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1) / len(cur)
    p, q = np.clip(p, _PSI_FLOOR, None), np.clip(q, _PSI_FLOOR, None)
    return float(np.sum((q - p) * np.log(q / p)))
