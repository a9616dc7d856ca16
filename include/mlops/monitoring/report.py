"""The day's drift against the model's reference: a sample, the reference, Evidently's report.

Every column is judged with the population stability index over the reference's deciles
(``quantile_psi``, registered with Evidently); a 0/1 column is compared value by value.
Evidently is imported inside the functions.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops import lake, registry
from include.mlops.core.settings import resolve_settings
from include.mlops.monitoring.policy import METHOD, ColumnDrift, DriftSummary, Policy, psi

if TYPE_CHECKING:
    import datetime as dt

    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from include.mlops.core.settings import Settings


logger = logging.getLogger(__name__)


PREDICTION = "prediction"
"""Name of the score column in the report (the reference's ``prediction``, the day's champion score)."""


_SCORE = "score_champion"


_VERSION = "champion_version"


_ID = "transaction_id"


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


def sample_positions(ids: pa.ChunkedArray | pa.Array, n: int, seed: int) -> np.ndarray | None:
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
    try:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        lake.write_bytes(lake.location(str(cache)), buffer.getvalue())
    except OSError as error:
        logger.info(f"could not cache the reference sample at {cache}: {error}")
    return frame


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
