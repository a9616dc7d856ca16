"""What a model was made from: the code version, the partitions' fingerprints and their validation results.

A fingerprint (:func:`partition_fingerprint`) names one file the run read: its dataset, day, URL,
sha256, size and rows. :func:`record_lineage` gathers them, with the feature snapshots the
point-in-time join served and the validation reports the partitions passed, into the
``lineage/data_lineage.json`` artifact of the training run. :func:`input_datasets` makes the
training and out-of-time rows MLflow datasets (``mlflow.log_input``), with the lake as their source
and the files' fingerprint as their digest, so the MLflow UI shows what a version learned from.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops import lake
from include.mlops.core.schema import LABELS, TRANSACTIONS
from include.mlops.core.settings import PROJECT_ROOT, resolve_settings
from include.mlops.training.window import day_range

if TYPE_CHECKING:
    from collections.abc import Iterable

    from include.mlops.core.settings import Settings
    from include.mlops.training.window import Window


logger = logging.getLogger(__name__)


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


def partition_fingerprint(dataset: str, day: dt.date, loc: lake.Location, data: bytes, rows: int) -> dict:
    """The fingerprint of one file of a partition: what it is, where, its sha256, size and rows.

    ``data`` is the file's content as read (hashed here, so the file is read once); ``rows`` is
    ``-1`` when the file was not decoded (a feature snapshot, which Feast reads).
    """
    return {
        "dataset": dataset,
        "day": day.isoformat(),
        "url": loc.url,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "rows": rows,
    }


def validation_results(dataset_days: Iterable[tuple[str, dt.date]], settings: Settings | None = None) -> list:
    """The validation report each (dataset, day) passed through, if present: path and success flag."""
    s = resolve_settings(settings)
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
    from include.mlops import features

    s = resolve_settings(settings)
    out = []
    for day in days:
        for view in ("customer", "merchant"):
            loc = features.snapshot_location(view, day, s)
            if lake.exists(loc):
                data = lake.read_bytes(loc)
                out.append(partition_fingerprint(lake.feature_snapshots(view), day, loc, data, -1))
    return out


def fingerprint_digest(fingerprints: Iterable[dict]) -> str:
    """One sha256 over a set of partition fingerprints (order-independent)."""
    lines = sorted(f"{p['url']} {p['sha256']}" for p in fingerprints)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class Lineage:
    """What a training run was made from: the lineage artifact and the identifiers its tags carry."""

    record: dict[str, Any]
    """The ``lineage/data_lineage.json`` artifact: window, partitions, snapshots, validation, sampling."""
    oot_fingerprint: str
    """:func:`fingerprint_digest` of the OOT partitions: promotion checks it rebuilt the same rows."""
    code_version: str
    code_sha256: str
    package_version: str


def record_lineage(
    window: Window,
    train_fingerprints: list[dict],
    oot_fingerprints: list[dict],
    sampling: dict[str, Any],
    settings: Settings | None = None,
) -> Lineage:
    """The lineage of a training run on ``window``: every partition file read (each once), the
    feature snapshots the point-in-time join served, the validation results of the partitions and
    how the rows were sampled (``sampling``)."""
    from include.mlops import features

    s = resolve_settings(settings)
    dataset_days = [(TRANSACTIONS.name, d) for d in [*window.train_days, *window.oot_days]]
    dataset_days += [(LABELS.name, d) for d in window.label_days]
    validations = validation_results(dataset_days, s)
    # A snapshot may serve payments up to two days after it (features.SNAPSHOT_TTL, one missing
    # day): the snapshots the join can have served start two days before the first training day.
    snapshot_days = day_range(
        window.train_start - dt.timedelta(days=2), window.oot_end - dt.timedelta(days=1)
    )
    # A labels partition serves several days: keep each file once, in the order it was read.
    partitions = list({p["url"]: p for p in train_fingerprints + oot_fingerprints}.values())
    record = {
        "window": window.as_dict(),
        "feature_service": features.FEATURE_SERVICE_NAME,
        "partitions": partitions,
        "feature_snapshots": snapshot_fingerprints(snapshot_days, s),
        "validation": validations,
        "sampling": sampling,
    }
    failed = [v["path"] for v in validations if v["success"] is False]
    if failed:
        logger.warning("%d partitions have a failed validation report: %s", len(failed), failed[:5])
    return Lineage(
        record=record,
        oot_fingerprint=fingerprint_digest(oot_fingerprints),
        code_version=code_version(),
        code_sha256=code_sha256(),
        package_version=package_version(),
    )


# --------------------------------------------------------------------------------------------------
# The datasets of a run, as MLflow shows them

SCHEMA_SAMPLE_ROWS = 1000
"""Rows a logged dataset's schema is inferred from (MLflow would look at every value of every row)."""


@functools.cache
def _dataset_class() -> type:
    """MLflow's pandas dataset, its schema inferred from a sample and its digest given, not computed.

    MLflow infers the schema from every value (about 0.13 s per float column per 200k rows) and
    digests with a per-cell type check of the whole frame: a day of a million rows would cost
    about a minute. The digest given is the lake files' own (:func:`fingerprint_digest`).
    """
    import warnings

    from mlflow.data.pandas_dataset import PandasDataset

    class LakeDataset(PandasDataset):
        @property
        def schema(self) -> Any:
            head = self.df.head(SCHEMA_SAMPLE_ROWS)
            with warnings.catch_warnings():
                # "integer columns cannot represent missing values": a hint for model signatures.
                warnings.simplefilter("ignore", UserWarning)
                return PandasDataset(df=head, source=self.source, digest=self.digest).schema

    return LakeDataset


def lake_dataset(frame: Any, source: str, name: str, fingerprints: list[dict], target: str | None) -> Any:
    """An MLflow dataset of ``frame``, read from the lake location ``source`` (a folder or an S3 URL).

    Its digest is the first 16 hex of :func:`fingerprint_digest` of the files read, so two runs
    on the same partitions show the same digest in the MLflow UI, whatever their sampling.
    """
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():
        # A local path matches MLflow's two local sources (file and artifact): either is right.
        warnings.simplefilter("ignore", UserWarning)
        resolved = resolve_dataset_source(source)
    digest = fingerprint_digest(fingerprints)[:16]
    return _dataset_class()(df=frame, source=resolved, targets=target, name=name, digest=digest)


def input_datasets(
    window: Window, train: Any, oot: Any, settings: Settings | None = None
) -> list[tuple[Any, str]]:
    """The training and out-of-time rows as MLflow datasets, with the context each is logged in.

    ``train`` and ``oot`` are the run's :class:`~.dataset.LabelledDays` (frame and fingerprints).
    """
    from include.mlops.core.schema import LABEL

    source = lake.root("lake", settings).join(TRANSACTIONS.name).url
    return [
        (
            lake_dataset(
                train.frame, source, f"transactions {window.train_start}..{window.train_end}",
                train.fingerprints, LABEL,
            ),
            "training",
        ),
        (
            lake_dataset(
                oot.frame, source, f"transactions {window.oot_start}..{window.oot_end} (out of time)",
                oot.fingerprints, LABEL,
            ),
            "evaluation",
        ),
    ]  # fmt: skip
