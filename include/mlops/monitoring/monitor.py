"""Drift monitor: is the scored day still the world the champion learnt? Retrain when it is not.

What one day's check does (:func:`monitor_day`, the ``check_drift`` task of ``monitor_drift``)
==============================================================================================
1. Reads the day's predictions partition (only the columns it needs) and takes a deterministic
   sample of at most ``MLOPS_DRIFT_SAMPLE_ROWS`` payments (a fixed hash of ``transaction_id`` and
   ``MLOPS_SEED``): a 1M-row day costs what a 50k-row day costs, with the same verdict.
2. Loads the **reference sample** of the model version that scored the day (the out-of-time rows
   its training run logged as ``reference/reference_sample.parquet``: features as served, its
   prediction and the label), cached per version under ``MLOPS_HOME/cache/drift/``.
3. Runs an Evidently report (``DataDriftPreset`` over the key features, ``ValueDrift`` of the
   champion's score against the reference prediction). Every column is judged with the
   **population stability index over the reference's deciles** (``quantile_psi``, registered with
   Evidently; a 0/1 column is compared value by value). Evidently's built-in PSI bins the combined
   range into equal widths, which puts almost every amount ratio or score into the first bin;
   Wasserstein distance swings with a single extreme payment; p-value tests flag everything at
   50k rows. Deciles of the reference are scale-free, insensitive to a few outliers, the same for
   a monotone transform of the score, and PSI has the familiar reading (0.1 moderate, 0.25 major).
   A column is drifted when Evidently's test for it fails (score at or above its threshold).
4. Performance, once labels have arrived: for the last ``MLOPS_DRIFT_PERFORMANCE_DAYS`` days
   ``X <= day - 5`` whose labels partitions ``X+1 .. X+5`` are all in the lake and that the same
   model version scored (and that lie after its out-of-time window, so none is in-sample), joins
   the predictions with the labels and computes PR-AUC and recall at 1 % FPR, compared with the
   PR-AUC on the version's training run (``pr_auc``, its out-of-time days).
5. Decides with the pure function :func:`decide` (policy below), writes ``drift.html`` and
   ``drift.json`` (Evidently's) and a compact ``verdict.json`` to
   ``MLOPS_REPORTS_URL/drift/dt=YYYY-MM-DD/`` (atomic writes; local or S3), logs the same three
   files, the scores and the verdict to one MLflow run per day in the ``<model>-monitoring``
   experiment (a rerun of the day reuses that run), and, when the verdict is to retrain, records
   the request on the registered model (last step, so a failed check never swallows a retrain).

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

Where the cooldown state lives
==============================
Tags on the registered model in MLflow: ``drift_retrain_requested_day``, ``drift_retrain_reason``,
``drift_retrain_requested_at`` (UTC), ``drift_retrain_model_version`` and
``drift_retrain_airflow_run_id``. MLflow is the one store every profile and every worker already
shares (the registry the champion lives in), tags are visible next to the promotion's
``last_decision``. Reading them, deciding and recording a request happen under the model's
promotion lock, so two days monitored at once (``monitor_drift`` runs two days at a time) decide
one after the other. Each day's ``verdict.json`` keeps the history.

Rerunning a day that asked for a retrain answers ``retrain: false`` (already requested): to retry
a trigger that failed, clear only the ``retrain_on_drift`` task, whose input is kept.

pandas, pyarrow's parquet reader, Evidently and MLflow are imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops import lake, registry
from include.mlops.core.schema import LABEL, LABELS, MAX_LABEL_DELAY_DAYS
from include.mlops.core.settings import env_number
from include.mlops.core.settings import settings as current_settings

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from include.mlops.core.settings import Settings

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

METHOD = "quantile_psi"
"""The drift statistic of every column (registered with Evidently by :func:`register_stattest`)."""

PREDICTION = "prediction"
"""Name of the score column in the report (the reference's ``prediction``, the day's champion score)."""

REPORT_FOLDER = lake.DRIFT_REPORTS
HTML_NAME = "drift.html"
JSON_NAME = "drift.json"
VERDICT_NAME = "verdict.json"

TAG_DAY = "drift_retrain_requested_day"
TAG_REASON = "drift_retrain_reason"
TAG_AT = "drift_retrain_requested_at"
TAG_VERSION = "drift_retrain_model_version"
TAG_AIRFLOW_RUN = "drift_retrain_airflow_run_id"
RUN_DAY_TAG = "drift_day"

SUPPRESSED_SAME_DAY = "already_requested"
SUPPRESSED_LATER_DAY = "later_day_requested"
SUPPRESSED_COOLDOWN = "cooldown"
SUPPRESSED_RUNNING = "retrain_running"

_SCORE = "score_champion"
_VERSION = "champion_version"
_ID = "transaction_id"
_PSI_BINS = 10
_PSI_FLOOR = 1e-4
_MAX_DISCRETE = 20
_EPS = 1e-9  # a share or a drop computed as exactly the threshold counts


def _log(message: str) -> None:
    print(f"[drift] {message}", file=sys.stderr, flush=True)


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else current_settings()


# --------------------------------------------------------------------------------------------------
# Policy


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


# --------------------------------------------------------------------------------------------------
# What was measured, and the decision


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


# --------------------------------------------------------------------------------------------------
# The statistic


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
    if len(values) <= _MAX_DISCRETE:
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


_REGISTERED = False


def register_stattest() -> None:
    """Register :data:`METHOD` (PSI over the reference's deciles) with Evidently, once per process."""
    global _REGISTERED
    if _REGISTERED:
        return
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType

    def _quantile_psi(
        reference: Any, current: Any, feature_type: Any, threshold: float
    ) -> tuple[float, bool]:
        value = psi(reference.to_numpy(dtype="float64"), current.to_numpy(dtype="float64"))
        return value, bool(value >= threshold)

    stat_test = StatTest(
        name=METHOD,
        display_name="PSI over reference deciles",
        allowed_feature_types=[ColumnType.Numerical, ColumnType.Categorical],
        default_threshold=0.2,
    )
    register_stattest(stat_test, _quantile_psi)
    _REGISTERED = True


# --------------------------------------------------------------------------------------------------
# Reading the day and the reference


def _sample_positions(ids: pa.ChunkedArray | pa.Array, n: int, seed: int) -> np.ndarray | None:
    """Positions of the ``n`` rows with the smallest hash of their id (``None``: keep every row)."""
    import numpy as np
    import pandas as pd

    if len(ids) <= n:
        return None
    key = hashlib.sha256(f"mlops-drift-{seed}".encode()).hexdigest()[:16]
    hashed = pd.util.hash_array(np.asarray(ids.to_numpy(zero_copy_only=False), dtype=object), hash_key=key)
    return np.sort(np.argpartition(hashed, n - 1)[:n])


def _day_version(table: pa.Table, day: dt.date) -> int:
    import pyarrow.compute as pc

    counts = pc.value_counts(table.column(_VERSION)).to_pylist()
    if not counts:
        raise RuntimeError(f"the predictions of {day} are empty: nothing to monitor")
    return int(max(counts, key=lambda c: c["counts"])["values"])


def _cache_file(s: Settings, version: int, run_id: str) -> Path:
    return Path(s.home) / "cache" / "drift" / f"{s.model_name}-v{version}-{run_id}.parquet"


def load_reference(version: int, settings: Settings | None = None) -> pd.DataFrame:
    """The reference sample of model ``version`` (logged by its training run), cached per version."""
    import io

    import pandas as pd

    s = _settings(settings)
    client = registry.configure_mlflow(s)
    run_id = client.get_model_version(s.model_name, str(version)).run_id
    if not run_id:
        raise RuntimeError(
            f"{s.model_name} version {version} has no MLflow run: its reference sample cannot be found"
        )
    cache = _cache_file(s, version, run_id)
    if cache.exists():
        return pd.read_parquet(cache)
    try:
        frame = registry.reference_sample(run_id, s)
    except Exception as error:
        raise RuntimeError(
            f"{s.model_name} version {version} (run {run_id}) has no readable reference sample "
            f"{registry.REFERENCE_ARTIFACT}: it was not trained by include.mlops.training, so its drift "
            "cannot be judged. Retrain (train_model) to get a version that has one. "
            f"({type(error).__name__}: {error})"
        ) from error
    try:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        lake.write_bytes(lake.location(str(cache)), buffer.getvalue())
    except OSError as error:
        _log(f"could not cache the reference sample at {cache}: {error}")
    return frame


# --------------------------------------------------------------------------------------------------
# The report


def _is_flag(values: pd.Series) -> bool:
    present = values.dropna().unique()
    return len(present) > 0 and set(present.tolist()) <= {0, 1}


def drift_report(
    current: pd.DataFrame, reference: pd.DataFrame, features: list[str], policy: Policy
) -> tuple[Any, DriftSummary]:
    """Run the Evidently report of ``features`` and ``prediction``; return the snapshot and its summary.

    Both frames hold the feature columns and ``prediction``. A key feature that is empty in the
    reference cannot be judged (skipped); one empty in the current day while present in the
    reference is counted as drifted (the feature is no longer served).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    register_stattest()
    judged: list[str] = []
    skipped: list[str] = []
    missing: list[ColumnDrift] = []
    flags: list[str] = []
    for column in features:
        ref, cur = reference[column], current[column]
        if ref.notna().sum() == 0:
            skipped.append(column)
            continue
        threshold = policy.flag_psi_threshold if _is_flag(ref) else policy.psi_threshold
        if cur.notna().sum() == 0:
            missing.append(ColumnDrift(column, None, threshold, True, note="no value on this day"))
            continue
        judged.append(column)
        if _is_flag(ref):
            flags.append(column)
    thresholds = {c: (policy.flag_psi_threshold if c in flags else policy.psi_threshold) for c in judged}
    columns = [*judged, PREDICTION]
    definition = DataDefinition(
        numerical_columns=[c for c in columns if c not in flags], categorical_columns=flags
    )
    metrics: list[Any] = []
    if judged:
        metrics.append(
            DataDriftPreset(
                columns=judged,
                drift_share=policy.drift_share,
                method=METHOD,
                per_column_method=dict.fromkeys(judged, METHOD),
                per_column_threshold=thresholds,
            )
        )
    metrics.append(ValueDrift(column=PREDICTION, method=METHOD, threshold=policy.prediction_psi_threshold))
    snapshot = Report(metrics, include_tests=True).run(
        current_data=Dataset.from_pandas(current[columns].copy(), data_definition=definition),
        reference_data=Dataset.from_pandas(reference[columns].copy(), data_definition=definition),
    )
    found = _value_drifts(snapshot.dict())
    results = []
    for column in [*judged, PREDICTION]:
        threshold = thresholds.get(column, policy.prediction_psi_threshold)
        if column not in found:
            raise RuntimeError(f"the Evidently report has no drift result for {column!r}")
        score, status, method = found[column]
        if status in ("FAIL", "SUCCESS"):
            drifted, note = status == "FAIL", ""
        else:  # no test result: the statistic is a distance, so compare it with the threshold
            drifted, note = score is not None and score >= threshold, f"test status {status!r}"
        results.append(ColumnDrift(column, score, threshold, drifted, method or METHOD, note))
    summary = DriftSummary(
        columns=tuple(results[:-1]) + tuple(missing), prediction=results[-1], skipped=tuple(skipped)
    )
    return snapshot, summary


def _value_drifts(report: dict) -> dict[str, tuple[float | None, str | None, str | None]]:
    """``column -> (score, test status, method)`` of every ``ValueDrift`` in an Evidently snapshot dict."""
    scores: dict[str, tuple[float | None, str | None]] = {}
    for metric in report.get("metrics", []):
        config = metric.get("config") or {}
        if str(config.get("type", "")).endswith(":ValueDrift"):
            value = metric.get("value")
            score = float(value) if isinstance(value, int | float) and math.isfinite(value) else None
            scores[config["column"]] = (score, config.get("method"))
    status: dict[str, str] = {}
    for test in report.get("tests", []):
        params = (test.get("metric_config") or {}).get("params") or {}
        if str(params.get("type", "")).endswith(":ValueDrift"):
            status[params["column"]] = str(test.get("status"))
    return {c: (score, status.get(c), method) for c, (score, method) in scores.items()}


# --------------------------------------------------------------------------------------------------
# Performance once labels have arrived


def _run_metrics(client: Any, run_id: str | None) -> dict[str, float]:
    if not run_id:
        return {}
    try:
        return dict(client.get_run(run_id).data.metrics)
    except Exception:
        return {}


def measure_performance(
    day: dt.date, version: int, policy: Policy, settings: Settings | None = None
) -> Performance:
    """PR-AUC and recall at 1 % FPR of ``version`` on the latest fully labelled days before ``day``.

    A day ``X`` counts when ``X <= day - 5``, every labels partition ``X+1 .. X+5`` is in the lake,
    its predictions were made by ``version``, and ``X`` is after the version's out-of-time window
    (``oot_end`` tag), so that none of it was seen in training. The last
    ``policy.performance_days`` such days are pooled (each sampled like the drift check).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from include.mlops.core.metrics import TARGET_FPR, average_precision, recall_at_fpr

    s = _settings(settings)
    client = registry.configure_mlflow(s)
    mv = client.get_model_version(s.model_name, str(version))
    baseline = _run_metrics(client, mv.run_id)
    base = {
        "baseline_pr_auc": baseline.get("pr_auc"),
        "baseline_recall_at_1pct_fpr": baseline.get("recall_at_1pct_fpr"),
    }
    oot_end = mv.tags.get("oot_end")
    after = dt.date.fromisoformat(oot_end) if oot_end else None

    def labels_folder(d: dt.date) -> lake.Location:
        return lake.partition("lake", LABELS.name, d, s)

    last = day - dt.timedelta(days=MAX_LABEL_DELAY_DAYS)
    earliest = last - dt.timedelta(days=policy.performance_days - 1)
    chosen: list[tuple[dt.date, pa.Table]] = []
    notes = []
    candidate = last
    while candidate >= earliest:
        x, candidate = candidate, candidate - dt.timedelta(days=1)
        if after is not None and x <= after:
            notes.append(f"{x} is not after the model's out-of-time days")
            break
        label_days = [x + dt.timedelta(days=k) for k in range(1, MAX_LABEL_DELAY_DAYS + 1)]
        if any(not lake.data_files(labels_folder(d)) for d in label_days):
            notes.append(f"labels of {x} incomplete")
            continue
        loc = lake.partition_file(lake.PREDICTIONS, x, s)
        if not lake.exists(loc):
            notes.append(f"{x} not scored")
            continue
        table = lake.read_parquet(loc, [_ID, _SCORE, _VERSION])
        table = table.filter(pc.equal(table.column(_VERSION), version))
        if table.num_rows == 0:
            notes.append(f"{x} scored by another version")
            continue
        keep = _sample_positions(table.column(_ID), policy.sample_rows, s.seed)
        chosen.append((x, table if keep is None else table.take(pa.array(keep))))
    if not chosen:
        return Performance(note="; ".join(notes) or "no fully labelled day yet", **base)

    chosen.sort(key=lambda item: item[0])
    scored = pa.concat_tables([t.select([_ID, _SCORE]) for _, t in chosen])
    ids = scored.column(_ID)
    label_days = sorted(
        {x + dt.timedelta(days=k) for x, _ in chosen for k in range(1, MAX_LABEL_DELAY_DAYS + 1)}
    )
    found = []
    for d in label_days:
        for f in lake.data_files(labels_folder(d)):
            part = lake.read_parquet(f, [_ID, LABEL, "reported_at"])
            found.append(part.filter(pc.is_in(part.column(_ID), value_set=ids.combine_chunks())))
    labels = pa.concat_tables(found).to_pandas()
    # A payment reported twice (settled, then charged back): the latest report wins.
    labels = labels.sort_values("reported_at", kind="stable").drop_duplicates(_ID, keep="last")
    frame = scored.to_pandas().merge(labels[[_ID, LABEL]], on=_ID, how="inner")
    y = frame[LABEL].to_numpy(dtype=np.int64)
    score = frame[_SCORE].to_numpy(dtype=np.float64)
    positives = int(y.sum())
    days = tuple(x.isoformat() for x, _ in chosen)
    coverage = len(frame) / max(scored.num_rows, 1)
    if positives == 0:
        return Performance(
            days, len(frame), 0, label_coverage=coverage, note="no fraud among the labelled rows", **base
        )
    return Performance(
        days=days,
        rows=len(frame),
        positives=positives,
        pr_auc=average_precision(y, score),
        recall_at_1pct_fpr=recall_at_fpr(y, score, TARGET_FPR),
        label_coverage=coverage,
        note="; ".join(notes),
        **base,
    )


# --------------------------------------------------------------------------------------------------
# Trigger state (tags on the registered model)


@dataclass(frozen=True)
class Trigger:
    """The last drift-triggered retrain request recorded on the registered model."""

    day: dt.date
    reason: str = ""
    requested_at: str = ""
    model_version: str = ""
    airflow_run_id: str = ""

    def as_dict(self) -> dict[str, str]:
        """The trigger as JSON-compatible values."""
        return {**asdict(self), "day": self.day.isoformat()}


def last_trigger(settings: Settings | None = None) -> Trigger | None:
    """The last drift-triggered retrain request, from the registered model's tags (``None``: never)."""
    from mlflow.exceptions import MlflowException

    s = _settings(settings)
    client = registry.configure_mlflow(s)
    try:
        tags = client.get_registered_model(s.model_name).tags
    except MlflowException:
        return None
    text = tags.get(TAG_DAY)
    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise RuntimeError(
            f"registered model {s.model_name} has tag {TAG_DAY}={text!r}, not a YYYY-MM-DD day: "
            "fix or delete the tag in MLflow"
        ) from None
    return Trigger(
        day=day,
        reason=tags.get(TAG_REASON, ""),
        requested_at=tags.get(TAG_AT, ""),
        model_version=tags.get(TAG_VERSION, ""),
        airflow_run_id=tags.get(TAG_AIRFLOW_RUN, ""),
    )


def retrain_running(trigger: Trigger | None, policy: Policy, settings: Settings | None = None) -> bool:
    """Whether the retrain of ``trigger`` still runs: requested less than the timeout ago, no model yet.

    Its model is a version whose ``reason`` tag starts with ``drift on <trigger day>`` (the reason
    travels from the trigger to ``train_model`` and onto the version it registers).
    """

    if trigger is None or not trigger.requested_at:
        return False
    try:
        requested = dt.datetime.fromisoformat(trigger.requested_at)
    except ValueError:
        return False
    if requested.tzinfo is None:
        requested = requested.replace(tzinfo=dt.UTC)
    age_hours = (dt.datetime.now(dt.UTC) - requested).total_seconds() / 3600
    if age_hours >= policy.retrain_timeout_hours:
        return False
    s = _settings(settings)
    client = registry.configure_mlflow(s)
    prefix = f"drift on {trigger.day.isoformat()}"
    versions = client.search_model_versions(f"name = '{s.model_name}'")
    return not any(v.tags.get("reason", "").startswith(prefix) for v in versions)


def record_trigger(
    verdict: Verdict, model_version: int, airflow_run_id: str | None, settings: Settings | None = None
) -> Trigger:
    """Record a retrain request on the registered model (the cooldown's state)."""

    s = _settings(settings)
    client = registry.configure_mlflow(s)
    trigger = Trigger(
        day=verdict.day,
        reason=registry.cut(verdict.reason),
        requested_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        model_version=str(model_version),
        airflow_run_id=airflow_run_id or "",
    )
    # The day last: a reader that sees the new day sees its reason too.
    for key, value in (
        (TAG_REASON, trigger.reason),
        (TAG_AT, trigger.requested_at),
        (TAG_VERSION, trigger.model_version),
        (TAG_AIRFLOW_RUN, trigger.airflow_run_id),
        (TAG_DAY, trigger.day.isoformat()),
    ):
        client.set_registered_model_tag(s.model_name, key, value)
    return trigger


# --------------------------------------------------------------------------------------------------
# Reports and MLflow


def report_location(day: dt.date, settings: Settings | None = None) -> lake.Location:
    """The stable folder of ``day``'s drift reports: ``<reports>/drift/dt=YYYY-MM-DD``."""
    return lake.partition("reports", REPORT_FOLDER, day, settings)


def experiment_name(settings: Settings | None = None) -> str:
    """The MLflow experiment of the drift checks: ``<model_name>-monitoring``."""
    return registry.experiment_name("monitoring", settings)


def _experiment_id(client: Any, s: Settings) -> str:
    return registry.ensure_experiment(client, experiment_name(s), s)


def monitoring_run(day: dt.date, settings: Settings | None = None) -> str:
    """The id of ``day``'s MLflow run in the monitoring experiment, created on first use.

    A day has one run: a rerun reuses it (extra ones, e.g. from a crash between creation and
    tagging, are deleted).
    """

    s = _settings(settings)
    client = registry.configure_mlflow(s)
    experiment_id = _experiment_id(client, s)
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.{RUN_DAY_TAG} = '{day.isoformat()}'", max_results=20
    )
    if runs:
        keep, *extra = sorted(runs, key=lambda r: r.info.start_time)
        for run in extra:
            client.delete_run(run.info.run_id)
        return keep.info.run_id
    run = client.create_run(
        experiment_id, run_name=f"drift-{day.isoformat()}", tags={RUN_DAY_TAG: day.isoformat()}
    )
    return run.info.run_id


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _log_run(
    client: Any, run_id: str, folder: Path, summary: DriftSummary, performance: Performance, result: dict
) -> None:
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    values: dict[str, float | None] = {
        "drift_share": summary.share,
        "drifted_features": float(len(summary.drifted)),
        "judged_features": float(summary.judged),
        "prediction_psi": summary.prediction.score if summary.prediction else None,
        "retrain": 1.0 if result["retrain"] else 0.0,
        "rows": float(result["rows"]),
        "sampled_rows": float(result["sampled_rows"]),
        "pr_auc": performance.pr_auc,
        "recall_at_1pct_fpr": performance.recall_at_1pct_fpr,
        "pr_auc_relative_drop": performance.relative_drop,
        "labelled_positives": float(performance.positives),
        "seconds": result["seconds"],
    }
    values.update({f"psi/{c.column}": c.score for c in summary.columns})
    metrics = [Metric(k, v, now, 0) for k, raw in values.items() if (v := _finite(raw)) is not None]
    tags = {
        RUN_DAY_TAG: result["day"],
        "model_version": str(result["model_version"]),
        "airflow_run_id": result.get("airflow_run_id") or "",
        "retrain": str(result["retrain"]).lower(),
        "signals": ",".join(result["signals"]) or "none",
        "suppressed_by": result.get("suppressed_by") or "",
        "reason": registry.cut(result["reason"]),
        "mlflow.note.content": registry.cut(result["explanation"]),
    }
    client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
    client.log_artifacts(run_id, str(folder), artifact_path=REPORT_FOLDER)


# --------------------------------------------------------------------------------------------------
# The day's check


def monitor_day(day: dt.date, airflow_run_id: str | None = None, settings: Settings | None = None) -> dict:
    """Check ``day`` for drift against the champion's reference; decide and record whether to retrain.

    Returns a JSON-compatible dict: ``day``, ``retrain``, ``reason`` (for ``train_model``'s conf),
    ``explanation``, ``signals``, ``suppressed_by``, ``model_version``, ``drifted_columns``
    (column -> PSI), ``drift_share``, ``prediction_psi``, ``performance``, ``report_url``,
    ``mlflow_run_id``, ``rows``, ``sampled_rows`` and ``seconds``. Raises ``FileNotFoundError``
    when the day has not been scored.
    """
    import pyarrow as pa

    started = time.perf_counter()
    if isinstance(day, str):
        day = dt.date.fromisoformat(day)
    s = _settings(settings)
    policy = Policy.from_env()
    client = registry.configure_mlflow(s)

    # The day, sampled.
    loc = lake.partition_file(lake.PREDICTIONS, day, s)
    if not lake.exists(loc):
        raise FileNotFoundError(
            f"no predictions for {day} at {loc.url}: run score_transactions for that day before monitoring it"
        )
    available = lake.parquet_columns(loc)
    features = [f for f in policy.features if f in available]
    absent = [f for f in policy.features if f not in available]
    table = lake.read_parquet(loc, [_ID, *features, _SCORE, _VERSION])
    rows = table.num_rows
    version = _day_version(table, day)
    keep = _sample_positions(table.column(_ID), policy.sample_rows, s.seed)
    if keep is not None:
        table = table.take(pa.array(keep))
    current = table.to_pandas().rename(columns={_SCORE: PREDICTION})
    for column in features:
        current[column] = current[column].astype("float64")

    reference = load_reference(version, s)
    missing_in_reference = [f for f in features if f not in reference.columns]
    features = [f for f in features if f in reference.columns]
    reference = reference.rename(columns={registry.REFERENCE_SCORE: PREDICTION})
    for column in features:
        reference[column] = reference[column].astype("float64")
    t = time.perf_counter()
    snapshot, summary = drift_report(current, reference, features, policy)
    report_seconds = time.perf_counter() - t
    if absent or missing_in_reference:
        summary = DriftSummary(
            summary.columns, summary.prediction, (*summary.skipped, *absent, *missing_in_reference)
        )

    performance = measure_performance(day, version, policy, s)
    # Reading the cooldown state, deciding and recording a request happen under the model's lock
    # (the promotion lock), so two days monitored at once cannot both pass the cooldown.

    with tempfile.TemporaryDirectory(prefix="mlops-drift-") as tmp:
        local = Path(tmp)
        snapshot.save_html(str(local / HTML_NAME))
        (local / JSON_NAME).write_text(snapshot.json())
        with registry.model_lock(env_number("MLOPS_PROMOTION_LOCK_TIMEOUT", 600.0, float), s):
            trigger = last_trigger(s)
            running = retrain_running(trigger, policy, s)
            verdict = decide(summary, performance, trigger.day if trigger else None, day, policy, running)
            run_id = monitoring_run(day, s)
            folder = report_location(day, s)
            result: dict[str, Any] = {
                **verdict.as_dict(),
                "model_version": version,
                "drifted_columns": {c.column: _finite(c.score) for c in summary.drifted},
                "drift_share": summary.share,
                "prediction_psi": _finite(summary.prediction.score) if summary.prediction else None,
                "performance": performance.as_dict(),
                "report_url": folder.url,
                "mlflow_run_id": run_id,
                "airflow_run_id": airflow_run_id,
                "rows": rows,
                "sampled_rows": len(current),
                "reference_rows": len(reference),
                "report_seconds": round(report_seconds, 3),
                "seconds": round(time.perf_counter() - started, 3),
            }
            record = {
                **result,
                "computed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "policy": policy.as_dict(),
                "drift": summary.as_dict(),
                "last_trigger": trigger.as_dict() if trigger else None,
                "retrain_running": running,
            }
            if verdict.retrain:
                record["last_trigger"] = {"day": day.isoformat(), "reason": verdict.reason, "new": True}
            (local / VERDICT_NAME).write_text(
                json.dumps(_json_safe(record), indent=2, default=str, allow_nan=False)
            )
            # verdict.json last: it names the other two.
            for name in (HTML_NAME, JSON_NAME, VERDICT_NAME):
                lake.write_bytes(folder.join(name), (local / name).read_bytes())
            try:
                _log_run(client, run_id, local, summary, performance, result)
            finally:
                client.set_terminated(run_id)
            if verdict.retrain:
                record_trigger(verdict, version, airflow_run_id, s)
    _log(verdict.explanation)
    return _json_safe(result)
