"""The day's drift against the model's reference: the day's sample, the reference, Evidently's report.

The reference is the out-of-time sample that the version's training run logged
(:data:`~include.mlops.registry.REFERENCE_ARTIFACT`: features as served, its prediction and the
label), cached per version under ``MLOPS_HOME/cache/drift/``.

Every column is judged with the population stability index over the reference's deciles
(:data:`~.policy.METHOD`, registered with Evidently by :func:`register_stattest`; a 0/1 column is
compared value by value). Evidently's built-in PSI bins the combined range into equal widths,
which puts almost every amount ratio or score into the first bin; Wasserstein distance swings with
a single extreme payment; p-value tests flag everything at 50k rows. Deciles of the reference are
scale-free, insensitive to a few outliers, the same for a monotone transform of the score, and PSI
has the familiar reading (0.1 moderate, 0.25 major). A column is drifted when Evidently's test for
it fails (score at or above its threshold).

pandas, pyarrow and Evidently are imported inside the functions.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops import lake, registry
from include.mlops.core.settings import resolve_settings
from include.mlops.monitoring.policy import METHOD, ColumnDrift, DriftSummary, psi
from include.mlops.monitoring.predictions import ID, SCORE, VERSION, day_version, sample_positions

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Sequence

    import pandas as pd

    from include.mlops.core.policies import DriftPolicy
    from include.mlops.core.settings import Settings


logger = logging.getLogger(__name__)


PREDICTION = "prediction"
"""Name of the score column in the report (the reference's ``prediction``, the day's champion score)."""

_registered = False  # Evidently's registry is process-wide: register the statistic once


# --------------------------------------------------------------------------------------------------
# The two samples


@dataclass(frozen=True)
class DaySample:
    """The day's sample as the report compares it, and what the full partition held."""

    frame: pd.DataFrame
    """The sampled rows: the id, the key features present (float64), :data:`PREDICTION`, the version."""
    version: int
    """The model version that scored the day (its reference is the one to compare with)."""
    rows: int
    """Rows of the whole partition, before sampling."""
    features: tuple[str, ...]
    """The key features the partition holds."""
    absent: tuple[str, ...]
    """The key features it lacks (reported as skipped)."""


@dataclass(frozen=True)
class Reference:
    """The version's reference sample, aligned with the day's sample."""

    frame: pd.DataFrame
    """Its rows, with :data:`PREDICTION` and the comparable key features as float64."""
    features: tuple[str, ...]
    """The day's key features that the reference holds too: the ones that can be compared."""
    missing: tuple[str, ...]
    """The day's key features that the reference lacks (reported as skipped)."""


def read_day(day: dt.date, policy: DriftPolicy, settings: Settings | None = None) -> DaySample:
    """Read ``day``'s predictions partition (only the columns needed) and sample it.

    Raises ``FileNotFoundError`` when the day has not been scored.
    """
    import pyarrow as pa

    s = resolve_settings(settings)
    loc = lake.partition_file(lake.PREDICTIONS, day, s)
    if not lake.exists(loc):
        raise FileNotFoundError(
            f"no predictions for {day} at {loc.url}: run score_transactions for that day before monitoring it"
        )
    available = lake.parquet_columns(loc)
    features = tuple(f for f in policy.features if f in available)
    absent = tuple(f for f in policy.features if f not in available)
    table = lake.read_parquet(loc, [ID, *features, SCORE, VERSION])
    version = day_version(table, day)
    keep = sample_positions(table.column(ID), policy.sample_rows, s.seed)
    sample = table if keep is None else table.take(pa.array(keep))
    frame = sample.to_pandas().rename(columns={SCORE: PREDICTION})
    for column in features:
        frame[column] = frame[column].astype("float64")
    return DaySample(frame, version, table.num_rows, features, absent)


def _cache_file(s: Settings, version: int, run_id: str) -> Path:
    # The run id in the name: a version number reused by a recreated model cannot hit a stale file.
    return Path(s.home) / "cache" / "drift" / f"{s.model_name}-v{version}-{run_id}.parquet"


def load_reference(version: int, settings: Settings | None = None) -> pd.DataFrame:
    """The reference sample of model ``version`` (logged by its training run), cached per version."""
    import pandas as pd

    s = resolve_settings(settings)
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
    _write_cache(frame, cache)
    return frame


def _write_cache(frame: pd.DataFrame, cache: Path) -> None:
    import io

    try:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        lake.write_bytes(lake.location(str(cache)), buffer.getvalue())
    except OSError as error:
        # The check goes on without the cache; the next one downloads the sample again.
        logger.warning("could not cache the reference sample at %s: %s", cache, error)


def reference_for(version: int, features: Sequence[str], settings: Settings | None = None) -> Reference:
    """The reference sample of ``version``, aligned with the day's key ``features``."""
    loaded = load_reference(version, settings)
    comparable = tuple(f for f in features if f in loaded.columns)
    missing = tuple(f for f in features if f not in loaded.columns)
    frame = loaded.rename(columns={registry.REFERENCE_SCORE: PREDICTION})
    for column in comparable:
        frame[column] = frame[column].astype("float64")
    return Reference(frame, comparable, missing)


# --------------------------------------------------------------------------------------------------
# Evidently's report


def register_stattest() -> None:
    """Register :data:`METHOD` (PSI over the reference's deciles) with Evidently, once per process."""
    global _registered
    if _registered:
        return
    from evidently.legacy.calculations.stattests.registry import StatTest
    from evidently.legacy.calculations.stattests.registry import register_stattest as register
    from evidently.legacy.core import ColumnType

    def quantile_psi(reference: Any, current: Any, feature_type: Any, threshold: float) -> tuple[float, bool]:
        value = psi(reference.to_numpy(dtype="float64"), current.to_numpy(dtype="float64"))
        return value, bool(value >= threshold)

    stat_test = StatTest(
        name=METHOD,
        display_name="PSI over reference deciles",
        allowed_feature_types=[ColumnType.Numerical, ColumnType.Categorical],
        default_threshold=0.2,
    )
    register(stat_test, quantile_psi)
    _registered = True


@dataclass(frozen=True)
class ColumnPlan:
    """Which key features the report compares, and how."""

    judged: tuple[str, ...]
    """Features with values on both sides: compared by Evidently."""
    flags: tuple[str, ...]
    """The judged features that are 0/1 flags (categorical for Evidently, their own threshold)."""
    thresholds: dict[str, float]
    """PSI threshold of each judged feature."""
    skipped: tuple[str, ...]
    """Features empty in the reference: they cannot be judged."""
    unserved: tuple[ColumnDrift, ...]
    """Features empty on the day but present in the reference: drifted (no longer served)."""


@dataclass(frozen=True)
class DriftReport:
    """Evidently's report of one day and what it says."""

    snapshot: Any
    """Evidently's snapshot (``save_html``, ``json``)."""
    summary: DriftSummary
    seconds: float
    """How long building the report took."""


def _is_flag(values: pd.Series) -> bool:
    present = values.dropna().unique()
    return len(present) > 0 and set(present.tolist()) <= {0, 1}


def plan_columns(
    current: pd.DataFrame, reference: pd.DataFrame, features: Sequence[str], policy: DriftPolicy
) -> ColumnPlan:
    """Sort ``features`` into judged (flags among them), skipped and unserved (see :class:`ColumnPlan`)."""
    judged: list[str] = []
    flags: list[str] = []
    skipped: list[str] = []
    unserved: list[ColumnDrift] = []
    for column in features:
        ref, cur = reference[column], current[column]
        if ref.notna().sum() == 0:
            skipped.append(column)
            continue
        flag = _is_flag(ref)
        threshold = policy.flag_psi_threshold if flag else policy.psi_threshold
        if cur.notna().sum() == 0:
            unserved.append(ColumnDrift(column, None, threshold, True, note="no value on this day"))
            continue
        judged.append(column)
        if flag:
            flags.append(column)
    thresholds = {c: (policy.flag_psi_threshold if c in flags else policy.psi_threshold) for c in judged}
    return ColumnPlan(tuple(judged), tuple(flags), thresholds, tuple(skipped), tuple(unserved))


def drift_report(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    features: Sequence[str],
    policy: DriftPolicy,
    unavailable: Sequence[str] = (),
) -> DriftReport:
    """Run the Evidently report of ``features`` and :data:`PREDICTION`; return it with its summary.

    Both frames hold the feature columns and :data:`PREDICTION`. A key feature that is empty in the
    reference cannot be judged (skipped); one empty in the current day while present in the
    reference is counted as drifted (the feature is no longer served). ``unavailable``: key
    features missing from either frame, reported as skipped after those.
    """
    started = time.perf_counter()
    register_stattest()
    plan = plan_columns(current, reference, features, policy)
    snapshot = _run_evidently(current, reference, plan, policy)
    summary = _summarise(snapshot.dict(), plan, policy, unavailable)
    return DriftReport(snapshot, summary, time.perf_counter() - started)


def _run_evidently(
    current: pd.DataFrame, reference: pd.DataFrame, plan: ColumnPlan, policy: DriftPolicy
) -> Any:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    columns = [*plan.judged, PREDICTION]
    definition = DataDefinition(
        numerical_columns=[c for c in columns if c not in plan.flags], categorical_columns=list(plan.flags)
    )
    metrics: list[Any] = []
    if plan.judged:
        metrics.append(
            DataDriftPreset(
                columns=list(plan.judged),
                drift_share=policy.drift_share,
                method=METHOD,
                per_column_method=dict.fromkeys(plan.judged, METHOD),
                per_column_threshold=plan.thresholds,
            )
        )
    metrics.append(ValueDrift(column=PREDICTION, method=METHOD, threshold=policy.prediction_psi_threshold))
    return Report(metrics, include_tests=True).run(
        current_data=Dataset.from_pandas(current[columns].copy(), data_definition=definition),
        reference_data=Dataset.from_pandas(reference[columns].copy(), data_definition=definition),
    )


def _summarise(
    report: dict, plan: ColumnPlan, policy: DriftPolicy, unavailable: Sequence[str]
) -> DriftSummary:
    """The summary of an Evidently snapshot dict: one :class:`ColumnDrift` per judged column."""
    found = _value_drifts(report)
    results = []
    for column in [*plan.judged, PREDICTION]:
        threshold = plan.thresholds.get(column, policy.prediction_psi_threshold)
        if column not in found:
            raise RuntimeError(f"the Evidently report has no drift result for {column!r}")
        score, status, method = found[column]
        if status in ("FAIL", "SUCCESS"):
            drifted, note = status == "FAIL", ""
        else:  # no test result: the statistic is a distance, so compare it with the threshold
            drifted, note = score is not None and score >= threshold, f"test status {status!r}"
        results.append(ColumnDrift(column, score, threshold, drifted, method or METHOD, note))
    return DriftSummary(
        columns=(*results[:-1], *plan.unserved),
        prediction=results[-1],
        skipped=(*plan.skipped, *unavailable),
    )


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
