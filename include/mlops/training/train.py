"""Train the fraud model on a trailing window of fully labelled days; log, register, mark challenger.

The window
==========
Labels of the payments of day ``D`` arrive in the labels partitions ``D+1 .. D+5``
(:data:`~include.mlops.core.schema.MAX_LABEL_DELAY_DAYS`). Training as of day ``A`` therefore uses:

* ``latest_labels``: the newest labels partition in the lake on or before ``A``;
* ``labelled_through = latest_labels - 5``: the last day whose payments all have their label;
* out-of-time (OOT) days: the ``oot_days`` days ending at ``labelled_through``;
* training days: the ``window_days`` days before the OOT days. Their last
  :data:`VALIDATION_SHARE` (at least one day) is the validation slice that early stopping watches.

Every transactions partition of those days, every labels partition from the first training day to
``latest_labels`` and the feature snapshots the point-in-time join reads must be in the lake;
otherwise training stops and names what is missing. Each payment is joined to its label by
``transaction_id``; a payment without a label inside the window is an error (never silently 0),
and a payment labelled twice keeps its latest report (counted and logged).

Features come from Feast: :func:`include.mlops.features.training_frame` (the model's feature
service, point-in-time correct) over the entity rows.

Class imbalance
===============
Fraud is about 0.5 % of payments. On the training days **negatives are down-sampled** per day to
at most :data:`NEGATIVES_PER_POSITIVE` per fraud (and to :data:`MAX_TRAIN_ROWS` rows over the
window), and each kept negative carries the **inverse of
its day's keep rate as sample weight**, so the weighted training set has the original class
balance and the model's scores stay calibrated probabilities (``scale_pos_weight`` is not used).
The validation slice is sampled and weighted the same way. The OOT days are never re-balanced:
evaluation sees the real distribution. Above :data:`MAX_OOT_ROWS` OOT payments a uniform sample
(same share every day, a fixed hash of ``transaction_id``) is taken, which keeps the distribution.
Sampling is a deterministic function of ``transaction_id`` and ``MLOPS_SEED``, not of row order, so
a rerun (and the promotion step) gets the same rows.

The model
=========
XGBoost ``hist`` on ``cuda`` when a GPU really answers (probed), else ``cpu``; the device actually
used is read back from the booster's configuration and logged. A logistic-regression baseline is
trained and scored on the same split in the same run (``baseline_*`` metrics).

The model is logged with MLflow's xgboost flavour as a raw ``Booster`` (objective
``binary:logistic``), so ``mlflow.pyfunc`` ``predict`` returns fraud probabilities.
:func:`include.mlops.registry.load_scorer` and :func:`~include.mlops.registry.feature_columns`
are the supported way to use a registered version.

Knobs (environment, optional):

* ``MLOPS_TRAIN_DEVICE``: ``auto`` (default), ``cpu`` or ``cuda``.
* ``MLOPS_TRAIN_NEGATIVES_PER_POSITIVE``: default 20.
* ``MLOPS_TRAIN_MAX_ROWS``: training rows kept after down-sampling (all days), default 2,000,000.
* ``MLOPS_TRAIN_MAX_OOT_ROWS``: default 1,000,000.
* ``MLOPS_TRAIN_MAX_ROUNDS``: boosting rounds before early stopping, default 600.
* ``MLOPS_TRAIN_THREADS``: XGBoost threads, default the CPUs the process may use (cgroup quota).

pandas, scikit-learn, xgboost, mlflow and Feast are imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops import lake, registry
from include.mlops.core.metrics import classification_metrics
from include.mlops.core.schema import LABEL, LABELS, MAX_LABEL_DELAY_DAYS, TRANSACTIONS
from include.mlops.core.settings import PROJECT_ROOT, env_number
from include.mlops.core.settings import settings as current_settings

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from include.mlops.core.settings import Settings

WEIGHT = "sample_weight"
VALIDATION_SHARE = 0.2
NEGATIVES_PER_POSITIVE = 20
MAX_OOT_ROWS = 1_000_000
MAX_TRAIN_ROWS = 2_000_000
MAX_BASELINE_ROWS = 500_000
MAX_ROUNDS = 600
EARLY_STOPPING_ROUNDS = 50
REFERENCE_ROWS = 5_000


class TrainingDataError(RuntimeError):
    """The lake does not hold what the requested window needs; the message says what is missing."""


def _log(message: str) -> None:
    print(f"[training] {message}", file=sys.stderr, flush=True)


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else current_settings()


def _env_int(name: str, default: int) -> int:
    return env_number(name, default, int)


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


# --------------------------------------------------------------------------------------------------
# The window


@dataclass(frozen=True)
class Window:
    """The days a training run as of ``as_of`` uses (every bound inclusive)."""

    as_of: dt.date
    latest_labels: dt.date
    labelled_through: dt.date
    train_start: dt.date
    train_end: dt.date
    validation_start: dt.date
    oot_start: dt.date
    oot_end: dt.date

    @property
    def train_days(self) -> list[dt.date]:
        """The training days, validation slice included."""
        return _days(self.train_start, self.train_end)

    @property
    def oot_days(self) -> list[dt.date]:
        """The out-of-time days."""
        return _days(self.oot_start, self.oot_end)

    @property
    def label_days(self) -> list[dt.date]:
        """The labels partitions whose reports can concern the window's payments."""
        return _days(self.train_start + dt.timedelta(days=1), self.latest_labels)

    def describe(self) -> str:
        """One line for logs and error messages."""
        return (
            f"train {self.train_start}..{self.train_end} (validation from {self.validation_start}), "
            f"OOT {self.oot_start}..{self.oot_end}, labels through {self.latest_labels}"
        )

    def as_dict(self) -> dict[str, str]:
        """Every bound as an ISO date."""
        return {k: v.isoformat() for k, v in asdict(self).items()}


def _partition_files(base: lake.Location, dataset: str, day: dt.date) -> list[lake.Location]:
    """The data files of one lake partition (temporary and marker files excluded)."""
    return lake.data_files(lake.partition_at(base, dataset, day))


def training_window(
    as_of: dt.date, window_days: int, oot_days: int, settings: Settings | None = None
) -> Window:
    """The window a training run as of ``as_of`` uses, from the labels partitions in the lake.

    Raises :class:`TrainingDataError` when no labels partition exists on or before ``as_of``.
    """
    if window_days < 2:
        raise ValueError(f"window_days must be at least 2 (fit and validation days), not {window_days}")
    if oot_days < 1:
        raise ValueError(f"oot_days must be at least 1, not {oot_days}")
    base = lake.root("lake", settings)
    candidates = [d for d in lake.partition_days(base, LABELS.name) if d <= as_of]
    latest = next((d for d in reversed(candidates) if _partition_files(base, LABELS.name, d)), None)
    if latest is None:
        raise TrainingDataError(
            f"no labels partition on or before {as_of} under {base.join(LABELS.name).url}: "
            "ingest labels before training"
        )
    through = latest - dt.timedelta(days=MAX_LABEL_DELAY_DAYS)
    oot_start = through - dt.timedelta(days=oot_days - 1)
    train_end = oot_start - dt.timedelta(days=1)
    train_start = train_end - dt.timedelta(days=window_days - 1)
    # A young lake has fewer days than the window asks for: start at its second day (the first
    # has no feature snapshot before it) rather than fail, as long as two training days remain.
    # The window actually used is what gets logged.
    first = next(iter(lake.partition_days(base, TRANSACTIONS.name)), None)
    if first is not None and train_start <= first and (train_end - first).days >= 2:
        train_start = first + dt.timedelta(days=1)
        window_days = (train_end - train_start).days + 1
        _log(f"the lake starts on {first}: training window shortened to {train_start}..{train_end}")
    validation_days = max(1, round(window_days * VALIDATION_SHARE))
    return Window(
        as_of=as_of,
        latest_labels=latest,
        labelled_through=through,
        train_start=train_start,
        train_end=train_end,
        validation_start=train_end - dt.timedelta(days=validation_days - 1),
        oot_start=oot_start,
        oot_end=through,
    )


def check_window(window: Window, settings: Settings | None = None) -> None:
    """Fail with the list of missing partitions unless the lake holds everything ``window`` needs.

    Needed: the transactions of every training and OOT day, every labels partition from the day
    after the first training day to ``latest_labels``, and the customer and merchant feature
    snapshots of the day before each of those days (what the point-in-time join serves).
    """
    from include.mlops.features import snapshots as features

    s = _settings(settings)
    base = lake.root("lake", s)
    missing: list[str] = []
    days = [*window.train_days, *window.oot_days]
    missing += [f"transactions dt={d}" for d in days if not _partition_files(base, TRANSACTIONS.name, d)]
    missing += [f"labels dt={d}" for d in window.label_days if not _partition_files(base, LABELS.name, d)]
    for d in days:
        before = d - dt.timedelta(days=1)
        for view in ("customer", "merchant"):
            if not lake.exists(features.snapshot_location(view, before, s)):
                missing.append(f"features/{view} dt={before}")
    if missing:
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise TrainingDataError(
            f"training as of {window.as_of} ({window.describe()}) needs partitions missing from "
            f"{base.url}: {shown}. Ingest or backfill those days (and run materialize_features for "
            "the feature snapshots), or train with a shorter window."
        )


# --------------------------------------------------------------------------------------------------
# Reading the lake


def _fingerprint(dataset: str, day: dt.date, loc: lake.Location, data: bytes, rows: int) -> dict:
    return {
        "dataset": dataset,
        "day": day.isoformat(),
        "url": loc.url,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "rows": rows,
    }


def _read_partition(
    base: lake.Location, dataset: str, day: dt.date, columns: list[str] | None = None
) -> tuple[pa.Table, list[dict]]:
    """A lake partition as one table, with the sha256 of each file (each file is read once)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables, prints = [], []
    for loc in _partition_files(base, dataset, day):
        data = lake.read_bytes(loc)
        table = pq.read_table(pa.BufferReader(data), columns=columns)
        tables.append(table)
        prints.append(_fingerprint(dataset, day, loc, data, table.num_rows))
    if not tables:
        raise TrainingDataError(f"no {dataset} partition for {day} under {base.join(dataset).url}")
    return (pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]), prints


def _uniform(ids: pa.ChunkedArray | pa.Array, seed: int) -> np.ndarray:
    """A number in [0, 1) per id, fixed by the id and the seed only (not by the row order)."""
    import numpy as np
    import pandas as pd

    key = hashlib.sha256(f"mlops-sample-{seed}".encode()).hexdigest()[:16]
    hashed = pd.util.hash_pandas_object(
        pd.Series(ids.to_pandas()), index=False, hash_key=key, categorize=False
    ).to_numpy()
    return (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass
class LabelledDays:
    """Labelled payments of some days: the frame (lake columns + label + weight) and its lineage."""

    frame: pd.DataFrame
    fingerprints: list[dict]
    stats: dict[str, Any]


def _labelled_day_tables(
    base: lake.Location, days: list[dt.date], labels_until: dt.date
) -> Iterator[tuple[dt.date, pa.Table, list[dict], int]]:
    """For each day: its payments with their label (Arrow), the files read, and duplicate labels.

    Labels of day ``D``'s payments are looked up in the labels partitions ``D .. D+5`` (capped at
    ``labels_until``); the partitions are kept in a sliding cache, so each file is read once. A
    payment labelled twice keeps its latest report. Everything stays in Arrow (a 1M-row day costs
    about a second). Raises :class:`TrainingDataError` listing the payments without a label.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    cache: dict[dt.date, pa.Table] = {}
    seen_prints: set[str] = set()
    unlabelled: list[tuple[dt.date, int, list[str]]] = []
    for day in days:
        prints: list[dict] = []
        tx, tx_prints = _read_partition(base, TRANSACTIONS.name, day)
        prints += tx_prints
        wanted = [d for d in _days(day, day + dt.timedelta(days=MAX_LABEL_DELAY_DAYS)) if d <= labels_until]
        for old in [d for d in cache if d not in wanted]:
            del cache[old]
        for d in wanted:
            if d not in cache and _partition_files(base, LABELS.name, d):
                table, label_prints = _read_partition(
                    base, LABELS.name, d, ["transaction_id", LABEL, "reported_at"]
                )
                cache[d] = pa.table(
                    {
                        "transaction_id": table.column("transaction_id").cast(pa.string()),
                        LABEL: table.column(LABEL).cast(pa.int8()),
                        "reported_at": table.column("reported_at"),
                    }
                )
                prints += [p for p in label_prints if p["url"] not in seen_prints]
                seen_prints.update(p["url"] for p in label_prints)
        ids = tx.column("transaction_id")
        present = [cache[d] for d in wanted if d in cache]
        if present:
            labels = pa.concat_tables(present, promote_options="permissive")
            labels = labels.filter(pc.is_in(labels.column("transaction_id"), value_set=ids))
        else:
            labels = pa.table({"transaction_id": pa.array([], pa.string()), LABEL: pa.array([], pa.int8())})
        position = pc.index_in(ids, value_set=labels.column("transaction_id"))
        # Every label left concerns one of the day's payments: more labels than labelled payments
        # means some payment was reported twice (e.g. settled, then charged back).
        duplicates = labels.num_rows - (len(position) - position.null_count)
        if duplicates:
            # The latest report wins: index_in takes the first occurrence, so put those first.
            labels = labels.sort_by([("reported_at", "descending")])
            position = pc.index_in(ids, value_set=labels.column("transaction_id"))
        label = pc.take(labels.column(LABEL), position)
        missing = label.null_count
        if missing:
            examples = ids.filter(pc.is_null(label)).slice(0, 3).to_pylist()
            unlabelled.append((day, missing, examples))
            continue
        yield day, tx.append_column(LABEL, label.cast(pa.int8())), prints, int(duplicates)
    if unlabelled:
        detail = "; ".join(f"{d}: {n} payments (e.g. {', '.join(map(str, ex))})" for d, n, ex in unlabelled)
        raise TrainingDataError(
            f"payments without a label in the labels partitions up to {labels_until} under "
            f"{base.join(LABELS.name).url}: {detail}. Every payment of a fully labelled day must be "
            f"labelled within {MAX_LABEL_DELAY_DAYS} days: check the labels feed before training."
        )


def read_training_days(
    days: list[dt.date],
    labels_until: dt.date,
    negatives_per_positive: int,
    seed: int,
    settings: Settings | None = None,
    max_rows: int | None = None,
) -> LabelledDays:
    """Labelled payments of ``days`` with negatives down-sampled per day and weighted back.

    On each day every fraud is kept and negatives are kept with probability
    ``min(1, negatives_per_positive * max(frauds, 1) / negatives, day's share of max_rows / negatives)``;
    kept negatives get the weight ``1 / keep_rate`` (column ``sample_weight``), frauds weight 1.
    ``max_rows`` defaults to ``MLOPS_TRAIN_MAX_ROWS`` (:data:`MAX_TRAIN_ROWS`).
    """
    import numpy as np
    import pandas as pd

    base = lake.root("lake", settings)
    max_rows = _env_int("MLOPS_TRAIN_MAX_ROWS", MAX_TRAIN_ROWS) if max_rows is None else max_rows
    per_day_cap = max_rows / max(len(days), 1)
    parts, prints, per_day = [], [], []
    duplicates = total = negatives_total = 0
    for day, table, day_prints, dupes in _labelled_day_tables(base, days, labels_until):
        fraud = table.column(LABEL).to_numpy() == 1
        positives = int(fraud.sum())
        negatives = table.num_rows - positives
        rate = min(
            1.0,
            negatives_per_positive * max(positives, 1) / max(negatives, 1),
            max(per_day_cap - positives, 1) / max(negatives, 1),
        )
        keep = fraud | (_uniform(table.column("transaction_id"), seed) < rate)
        kept = table.filter(keep).to_pandas()
        kept[WEIGHT] = np.where(fraud[keep], 1.0, 1.0 / rate)
        parts.append(kept)
        prints += day_prints
        duplicates += dupes
        total += table.num_rows
        negatives_total += negatives
        per_day.append(
            {"day": day.isoformat(), "rows": table.num_rows, "positives": positives, "keep_rate": rate}
        )
    frame = pd.concat(parts, ignore_index=True)
    stats = {
        "rows_total": total,
        "negatives_total": negatives_total,
        "rows_kept": len(frame),
        "duplicate_labels": duplicates,
        "per_day": per_day,
    }
    return LabelledDays(frame, prints, stats)


def read_oot_days(
    days: list[dt.date], labels_until: dt.date, max_rows: int, seed: int, settings: Settings | None = None
) -> LabelledDays:
    """Labelled payments of ``days``, untouched, or a uniform sample when above ``max_rows``.

    The sample keeps the same share of every day (a fixed hash of ``transaction_id``), so the
    class balance and the mix of days are those of the real traffic.
    """
    import pandas as pd

    s = _settings(settings)
    base = lake.root("lake", s)
    per_day_cap = max(1, max_rows // max(len(days), 1))
    parts, prints, per_day = [], [], []
    duplicates = total = 0
    for day, table, day_prints, dupes in _labelled_day_tables(base, days, labels_until):
        rows = table.num_rows
        share = min(1.0, per_day_cap / max(rows, 1))
        if share < 1.0:
            table = table.filter(_uniform(table.column("transaction_id"), seed + 1) < share)
        parts.append(table.to_pandas())
        prints += day_prints
        duplicates += dupes
        total += rows
        per_day.append({"day": day.isoformat(), "rows": rows, "rows_kept": table.num_rows, "share": share})
    frame = pd.concat(parts, ignore_index=True)
    stats = {"rows_total": total, "rows_kept": len(frame), "duplicate_labels": duplicates, "per_day": per_day}
    return LabelledDays(frame, prints, stats)


def with_features(frame: pd.DataFrame, settings: Settings | None = None) -> pd.DataFrame:
    """``frame`` (lake payments) with the feature service's features, via Feast, in input order."""
    from include.mlops.features import snapshots as features

    try:
        return features.training_frame(frame, settings=settings)
    except Exception as error:
        if type(error).__name__ == "FeatureServiceNotFoundException":
            raise TrainingDataError(
                f"the Feast registry has no feature service {features.FEATURE_SERVICE_NAME!r}: run the "
                "materialize_features DAG (or features.apply_definitions()) once before training"
            ) from error
        raise


def oot_frame(
    oot_start: dt.date, oot_end: dt.date, settings: Settings | None = None
) -> tuple[pd.DataFrame, list[dict]]:
    """The OOT payments of ``oot_start .. oot_end`` with features and labels, as training saw them.

    The same rows as the training run's evaluation (same cap, same seed): what promotion scores.
    """
    s = _settings(settings)
    labels_until = oot_end + dt.timedelta(days=MAX_LABEL_DELAY_DAYS)
    data = read_oot_days(
        _days(oot_start, oot_end),
        labels_until,
        _env_int("MLOPS_TRAIN_MAX_OOT_ROWS", MAX_OOT_ROWS),
        s.seed,
        s,
    )
    return with_features(data.frame, s), data.fingerprints


# --------------------------------------------------------------------------------------------------
# Device, code version


def booster_device(booster: Any) -> str:
    """The device XGBoost really used, from the booster's configuration (not from its parameters)."""
    return str(json.loads(booster.save_config())["learner"]["generic_param"]["device"])


def detect_device(requested: str | None = None) -> str:
    """``cuda`` if this XGBoost build has CUDA and a GPU answers a one-round probe, else ``cpu``.

    ``requested`` (default ``MLOPS_TRAIN_DEVICE``, ``auto``) forces ``cpu``; ``cuda`` is still
    probed, and falls back to ``cpu`` with a message when no GPU answers.
    """
    import warnings

    import numpy as np
    import xgboost as xgb

    requested = (requested or os.environ.get("MLOPS_TRAIN_DEVICE", "") or "auto").lower()
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"MLOPS_TRAIN_DEVICE={requested!r}: expected auto, cpu or cuda")
    if requested == "cpu":
        return "cpu"
    if not xgb.build_info().get("USE_CUDA"):
        if requested == "cuda":
            _log("MLOPS_TRAIN_DEVICE=cuda but this XGBoost build has no CUDA support: training on cpu")
        return "cpu"
    rng = np.random.default_rng(0)
    probe = xgb.DMatrix(rng.random((32, 2)), label=rng.integers(0, 2, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        booster = xgb.train({"device": "cuda", "tree_method": "hist", "verbosity": 0}, probe, 1)
    device = "cuda" if booster_device(booster).startswith("cuda") else "cpu"
    if requested == "cuda" and device == "cpu":
        _log("MLOPS_TRAIN_DEVICE=cuda but no GPU answered: training on cpu")
    return device


def package_version() -> str:
    """The project's version (installed metadata, else ``pyproject.toml``)."""
    from importlib import metadata

    try:
        return metadata.version("card-fraud-mlops")
    except metadata.PackageNotFoundError:
        pass
    try:
        import tomllib

        return str(tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"])
    except (OSError, KeyError, ValueError):
        return "0+unknown"


def code_sha256() -> str:
    """sha256 over the sources of the production package ``include/mlops`` (relative paths and
    contents, sorted by path). Developer tooling lives outside it and does not count."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def code_version() -> str:
    """``<package version>+<first 12 hex of code_sha256>``."""
    return f"{package_version()}+{code_sha256()[:12]}"


# --------------------------------------------------------------------------------------------------
# Lineage


def validation_results(dataset_days: Iterable[tuple[str, dt.date]], settings: Settings | None = None) -> list:
    """The validation report each (dataset, day) passed through, if present: path and success flag."""
    s = _settings(settings)
    out = []
    for dataset, day in dataset_days:
        loc = lake.partition("reports", lake.validation_reports(dataset), day, s).join(lake.VALIDATION_RESULT)
        entry: dict[str, Any] = {"dataset": dataset, "day": day.isoformat(), "path": loc.url}
        if lake.exists(loc):
            try:
                entry.update(present=True, success=bool(json.loads(lake.read_bytes(loc))["success"]))
            except (ValueError, KeyError) as error:
                entry.update(present=True, success=None, error=f"unreadable report: {error}")
        else:
            entry.update(present=False, success=None)
        out.append(entry)
    return out


def snapshot_fingerprints(days: Iterable[dt.date], settings: Settings | None = None) -> list[dict]:
    """sha256 of the customer and merchant feature snapshots of ``days`` (those that exist)."""
    from include.mlops.features import snapshots as features

    s = _settings(settings)
    out = []
    for day in days:
        for view in ("customer", "merchant"):
            loc = features.snapshot_location(view, day, s)
            if lake.exists(loc):
                data = lake.read_bytes(loc)
                out.append(_fingerprint(lake.feature_snapshots(view), day, loc, data, -1))
    return out


def fingerprint_digest(fingerprints: Iterable[dict]) -> str:
    """One sha256 over a set of partition fingerprints (order-independent)."""
    lines = sorted(f"{p['url']} {p['sha256']}" for p in fingerprints)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# Fitting


def _xgb_params(device: str, seed: int) -> dict[str, Any]:
    return {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "device": device,
        "n_estimators": _env_int("MLOPS_TRAIN_MAX_ROUNDS", MAX_ROUNDS),
        "learning_rate": 0.05,
        "max_depth": 5,
        "min_child_weight": 3.0,
        "subsample": 0.9,
        "colsample_bytree": 0.9,
        "reg_lambda": 1.0,
        "max_bin": 256,
        "eval_metric": ["aucpr", "logloss"],
        "early_stopping_rounds": EARLY_STOPPING_ROUNDS,
        "random_state": seed,
        "n_jobs": training_threads(),
    }


def training_threads() -> int:
    """Threads for XGBoost: ``MLOPS_TRAIN_THREADS``, else the CPUs this process may really use.

    In a pod, ``os.cpu_count()`` is the node's cores; the cgroup quota (``cpu.max``) is the limit
    that counts. Oversubscribed OpenMP threads are several times slower than fewer threads.
    """
    configured = _env_int("MLOPS_TRAIN_THREADS", 0)
    if configured > 0:
        return configured
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def fit_xgboost(
    x_fit: pd.DataFrame,
    y_fit: np.ndarray,
    w_fit: np.ndarray,
    x_val: pd.DataFrame,
    y_val: np.ndarray,
    w_val: np.ndarray,
    device: str,
    seed: int,
) -> tuple[Any, dict[str, Any]]:
    """Fit XGBoost ``hist`` with early stopping on the validation slice (weighted log-loss).

    Returns the booster (device reset to ``cpu`` for portable scoring) and what happened: rounds,
    best validation scores and the device really used.
    """
    import warnings

    import xgboost as xgb

    params = _xgb_params(device, seed)
    model = xgb.XGBClassifier(**params)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ff]alling back.*")
        model.fit(
            x_fit,
            y_fit,
            sample_weight=w_fit,
            eval_set=[(x_val, y_val)],
            sample_weight_eval_set=[w_val],
            verbose=False,
        )
    booster = model.get_booster()
    used = booster_device(booster)
    best = int(model.best_iteration)
    history = model.evals_result()["validation_0"]
    # Keep only the trees up to the best round, so that every consumer scores the same model.
    booster = booster[: best + 1]
    booster.set_param({"device": "cpu"})
    info = {
        "device": used,
        "best_iteration": best,
        "validation_aucpr": float(history["aucpr"][best]),
        "validation_logloss": float(history["logloss"][best]),
        "params": {k: v for k, v in params.items() if k != "eval_metric"},
    }
    return booster, info


def fit_baseline(x: pd.DataFrame, y: np.ndarray, w: np.ndarray) -> Any:
    """The logistic-regression baseline: median imputation, signed log, scaling, L2 logistic regression."""
    import numpy as np
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    def signed_log(values: np.ndarray) -> np.ndarray:
        return np.sign(values) * np.log1p(np.abs(values))

    pipeline = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        FunctionTransformer(signed_log),
        StandardScaler(),
        LogisticRegression(C=1.0, max_iter=2000),
    )
    pipeline.fit(x.to_numpy(dtype="float64"), y, logisticregression__sample_weight=w)
    return pipeline


# --------------------------------------------------------------------------------------------------
# The entrypoint


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train(
    as_of: dt.date,
    window_days: int,
    oot_days: int,
    reason: str,
    airflow_run_id: str | None,
    settings: Settings | None = None,
) -> dict:
    """Train, evaluate on the OOT days, log to MLflow, register a version and alias it ``challenger``.

    Returns ``{"version", "run_id", "model_uri", "metrics", "device", "window"}``. Raises
    :class:`TrainingDataError` when the lake lacks a partition, a label or a fraud that the window
    needs; nothing is registered then.
    """
    import mlflow
    import mlflow.xgboost
    import numpy as np
    import xgboost as xgb
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, DataType, Schema

    from include.mlops.features import snapshots as features

    started = time.perf_counter()
    s = _settings(settings)
    window = training_window(as_of, window_days, oot_days, s)
    _log(f"as of {as_of}: {window.describe()}")
    check_window(window, s)
    seed = s.seed
    negatives_per_positive = _env_int("MLOPS_TRAIN_NEGATIVES_PER_POSITIVE", NEGATIVES_PER_POSITIVE)

    # Entity rows: labelled payments (training days re-balanced, OOT days untouched).
    t = time.perf_counter()
    train_data = read_training_days(window.train_days, window.latest_labels, negatives_per_positive, seed, s)
    oot_data = read_oot_days(
        window.oot_days, window.latest_labels, _env_int("MLOPS_TRAIN_MAX_OOT_ROWS", MAX_OOT_ROWS), seed, s
    )
    read_seconds = time.perf_counter() - t
    _log(
        f"read {train_data.stats['rows_total']} training payments (kept {train_data.stats['rows_kept']}) "
        f"and {oot_data.stats['rows_kept']} OOT payments in {read_seconds:.1f}s"
    )

    t = time.perf_counter()
    train_frame = with_features(train_data.frame, s)
    oot = with_features(oot_data.frame, s)
    feature_seconds = time.perf_counter() - t
    columns = list(features.FEATURE_COLUMNS)
    _log(
        f"features from {features.FEATURE_SERVICE_NAME} for {len(train_frame) + len(oot)} rows in "
        f"{feature_seconds:.1f}s"
    )

    in_validation = (train_frame["event_timestamp"] >= features.day_start(window.validation_start)).to_numpy()
    x_all = train_frame[columns].astype("float64")
    y_all = train_frame[LABEL].to_numpy(dtype=np.int32)
    w_all = train_frame[WEIGHT].to_numpy(dtype=np.float64)
    x_oot = oot[columns].astype("float64")
    y_oot = oot[LABEL].to_numpy(dtype=np.int32)
    fit_mask, val_mask = ~in_validation, in_validation
    for name, y in (("fit", y_all[fit_mask]), ("validation", y_all[val_mask]), ("OOT", y_oot)):
        if int(y.sum()) == 0:
            raise TrainingDataError(
                f"no fraud among the {len(y)} labelled payments of the {name} days ({window.describe()}): "
                "the metrics are undefined. Train with a longer window."
            )

    # The model.
    device = detect_device()
    t = time.perf_counter()
    booster, fit_info = fit_xgboost(
        x_all[fit_mask], y_all[fit_mask], w_all[fit_mask],
        x_all[val_mask], y_all[val_mask], w_all[val_mask],
        device, seed,
    )  # fmt: skip
    train_seconds = time.perf_counter() - t
    _log(f"xgboost on {fit_info['device']}: {fit_info['best_iteration'] + 1} rounds in {train_seconds:.1f}s")
    oot_scores = booster.inplace_predict(x_oot).astype(np.float64)
    metrics = classification_metrics(y_oot, oot_scores)

    # The baseline, same split (a uniform sample of the fit rows above MAX_BASELINE_ROWS: the same
    # weighted distribution, without a dense copy of millions of rows per preprocessing step).
    t = time.perf_counter()
    fit_rows = np.flatnonzero(fit_mask)
    if len(fit_rows) > MAX_BASELINE_ROWS:
        fit_rows = np.sort(np.random.default_rng(seed).choice(fit_rows, MAX_BASELINE_ROWS, replace=False))
    baseline = fit_baseline(x_all.iloc[fit_rows], y_all[fit_rows], w_all[fit_rows])
    baseline_seconds = time.perf_counter() - t
    baseline_metrics = classification_metrics(
        y_oot, baseline.predict_proba(x_oot.to_numpy(dtype="float64"))[:, 1]
    )
    _log(
        f"OOT PR-AUC {metrics['pr_auc']:.4f} (baseline {baseline_metrics['pr_auc']:.4f}), "
        f"recall at 1% FPR {metrics['recall_at_1pct_fpr']:.4f}"
    )

    all_metrics: dict[str, float] = {
        **metrics,
        **{f"baseline_{k}": v for k, v in baseline_metrics.items()},
        "pr_auc_margin_over_baseline": metrics["pr_auc"] - baseline_metrics["pr_auc"],
        "validation_aucpr": fit_info["validation_aucpr"],
        "validation_logloss": fit_info["validation_logloss"],
        "best_iteration": fit_info["best_iteration"],
        "train_rows": int(fit_mask.sum()),
        "train_positives": int(y_all[fit_mask].sum()),
        "validation_rows": int(val_mask.sum()),
        "validation_positives": int(y_all[val_mask].sum()),
        "window_rows_total": train_data.stats["rows_total"],
        "window_negatives_total": train_data.stats["negatives_total"],
        "oot_rows": len(oot),
        "oot_positives": int(y_oot.sum()),
        "oot_fraud_rate": float(y_oot.mean()),
        "oot_rows_total": oot_data.stats["rows_total"],
        "duplicate_labels": train_data.stats["duplicate_labels"] + oot_data.stats["duplicate_labels"],
        "train_seconds": train_seconds,
        "baseline_train_seconds": baseline_seconds,
        "read_seconds": read_seconds,
        "feature_seconds": feature_seconds,
        "gpu": 1.0 if fit_info["device"].startswith("cuda") else 0.0,
    }

    # Lineage: partition fingerprints and the validation results the data passed.
    day_sets = [(TRANSACTIONS.name, d) for d in [*window.train_days, *window.oot_days]]
    day_sets += [(LABELS.name, d) for d in window.label_days]
    validations = validation_results(day_sets, s)
    snapshot_days = _days(window.train_start - dt.timedelta(days=2), window.oot_end - dt.timedelta(days=1))
    partitions = list({p["url"]: p for p in train_data.fingerprints + oot_data.fingerprints}.values())
    lineage = {
        "window": window.as_dict(),
        "feature_service": features.FEATURE_SERVICE_NAME,
        "partitions": partitions,
        "feature_snapshots": snapshot_fingerprints(snapshot_days, s),
        "validation": validations,
        "sampling": {
            "negatives_per_positive": negatives_per_positive,
            "training_days": train_data.stats["per_day"],
            "oot_days": oot_data.stats["per_day"],
        },
    }
    failed = [v for v in validations if v["success"] is False]
    if failed:
        _log(f"{len(failed)} partitions have a failed validation report: {[v['path'] for v in failed][:5]}")

    # Reference sample for the drift monitor: OOT rows as served, with the prediction and the label.
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(oot), size=min(REFERENCE_ROWS, len(oot)), replace=False))
    reference = oot.iloc[pick][["transaction_id", "event_timestamp", *columns]].copy()
    reference[registry.REFERENCE_SCORE] = oot_scores[pick]
    reference[LABEL] = y_oot[pick]

    # MLflow: one run, one registered version.
    client = registry.configure_mlflow(s)
    experiment_id = registry.ensure_experiment(client, registry.experiment_name("training", s), s)
    version_code = code_version()
    data_window = f"train {window.train_start}..{window.train_end}, oot {window.oot_start}..{window.oot_end}"
    tags = {
        "reason": reason,
        "airflow_run_id": airflow_run_id or "",
        "data_window": data_window,
        "train_start": window.train_start.isoformat(),
        "train_end": window.train_end.isoformat(),
        "oot_start": window.oot_start.isoformat(),
        "oot_end": window.oot_end.isoformat(),
        "labelled_through": window.labelled_through.isoformat(),
        "feature_service": features.FEATURE_SERVICE_NAME,
        "code_version": version_code,
        "code_sha256": code_sha256(),
        "package_version": package_version(),
        "profile": s.profile,
        "device": fit_info["device"],
        "oot_fingerprint": fingerprint_digest(oot_data.fingerprints),
    }
    params = {
        "as_of": as_of.isoformat(),
        "window_days": window_days,
        "oot_days": oot_days,
        "validation_start": window.validation_start.isoformat(),
        "negatives_per_positive": negatives_per_positive,
        "imbalance": "negative down-sampling per day, kept negatives weighted 1/keep_rate",
        "device_requested": device,
        "device": fit_info["device"],
        "n_features": len(columns),
        "seed": seed,
        "baseline": "logistic regression (median impute, signed log1p, standardise, L2, C=1)",
        **{f"xgb_{k}": v for k, v in fit_info["params"].items() if k != "device"},
    }
    with tempfile.TemporaryDirectory(prefix="mlops-train-") as tmp:
        with mlflow.start_run(
            experiment_id=experiment_id,
            run_name=f"train-{as_of}-{time.strftime('%H%M%S')}",
            tags=tags,
        ) as run:
            mlflow.log_params(params)
            all_metrics["peak_rss_mib"] = _peak_rss_mib()
            mlflow.log_metrics({k: float(v) for k, v in all_metrics.items()})
            mlflow.log_dict(lineage, registry.LINEAGE_ARTIFACT)
            ref_path = Path(tmp) / Path(registry.REFERENCE_ARTIFACT).name
            reference.to_parquet(ref_path, index=False)
            mlflow.log_artifact(str(ref_path), artifact_path=str(Path(registry.REFERENCE_ARTIFACT).parent))
            sample = x_oot.head(200)
            output = infer_signature(sample, booster.inplace_predict(sample).astype(np.float64)).outputs
            # Every input a double (a count is missing for a new customer): cast before pyfunc predict.
            signature = ModelSignature(
                inputs=Schema([ColSpec(DataType.double, c) for c in columns]), outputs=output
            )
            info = mlflow.xgboost.log_model(
                booster,
                name=registry.MODEL_ARTIFACT,
                signature=signature,
                pip_requirements=registry.pip_requirements(),
                model_format="ubj",
                metadata={
                    "feature_service": features.FEATURE_SERVICE_NAME,
                    "output": "probability of fraud (binary:logistic)",
                    "xgboost_version": xgb.__version__,
                },
            )
            run_id = run.info.run_id
        version_tags = {
            "airflow_run_id": airflow_run_id or "",
            "reason": reason,
            "train_start": tags["train_start"],
            "train_end": tags["train_end"],
            "oot_start": tags["oot_start"],
            "oot_end": tags["oot_end"],
            "feature_service": features.FEATURE_SERVICE_NAME,
            "code_version": version_code,
            "device": fit_info["device"],
            "oot_pr_auc": f"{metrics['pr_auc']:.6f}",
        }
        registered = mlflow.register_model(info.model_uri, s.model_name, tags=version_tags)
    version = int(registered.version)
    client.update_model_version(
        s.model_name,
        str(version),
        description=f"{data_window}; OOT PR-AUC {metrics['pr_auc']:.4f} "
        f"(baseline {baseline_metrics['pr_auc']:.4f}); reason: {reason}",
    )
    registry.move_alias(client, s.model_name, registry.CHALLENGER, version)
    _log(
        f"registered {s.model_name} version {version} as {registry.CHALLENGER} (run {run_id}) "
        f"in {time.perf_counter() - started:.1f}s"
    )
    return {
        "version": version,
        "run_id": run_id,
        "model_uri": f"models:/{s.model_name}/{version}",
        "metrics": {k: round(float(v), 6) for k, v in all_metrics.items()},
        "device": fit_info["device"],
        "window": window.as_dict(),
    }
