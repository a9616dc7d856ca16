"""The days a training run uses: a trailing window of fully labelled days and the out-of-time days after it.

Labels of the payments of day ``D`` arrive in the labels partitions ``D+1 .. D+5``
(:data:`~include.mlops.core.schema.MAX_LABEL_DELAY_DAYS`). Training as of day ``A`` therefore uses:

* ``latest_labels``: the newest labels partition in the lake on or before ``A``;
* ``labelled_through = latest_labels - 5``: the last day whose payments all have their label;
* out-of-time (OOT) days: the ``oot_days`` days ending at ``labelled_through``;
* training days: the ``window_days`` days before the OOT days. Their last
  :data:`VALIDATION_SHARE` (at least one day) is the validation slice that early stopping watches.

Every transactions partition of those days, every labels partition from the first training day to
``latest_labels`` and the feature snapshots the point-in-time join reads must be in the lake;
otherwise training stops and names what is missing (:class:`TrainingDataError`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from include.mlops import lake
from include.mlops.core.schema import LABELS, MAX_LABEL_DELAY_DAYS, TRANSACTIONS
from include.mlops.core.settings import resolve_settings

if TYPE_CHECKING:
    from include.mlops.core.settings import Settings


logger = logging.getLogger(__name__)

VALIDATION_SHARE = 0.2


class TrainingDataError(RuntimeError):
    """The lake does not hold what the requested window needs; the message says what is missing."""


def day_range(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from ``first`` to ``last``, both included (empty when ``last`` is before ``first``)."""
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


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
        return day_range(self.train_start, self.train_end)

    @property
    def oot_days(self) -> list[dt.date]:
        """The out-of-time days."""
        return day_range(self.oot_start, self.oot_end)

    @property
    def label_days(self) -> list[dt.date]:
        """The labels partitions whose reports can concern the window's payments."""
        return day_range(self.train_start + dt.timedelta(days=1), self.latest_labels)

    def describe(self) -> str:
        """One line for logs and error messages."""
        return (
            f"train {self.train_start}..{self.train_end} (validation from {self.validation_start}), "
            f"OOT {self.oot_start}..{self.oot_end}, labels through {self.latest_labels}"
        )

    def as_dict(self) -> dict[str, str]:
        """Every bound as an ISO date."""
        return {k: v.isoformat() for k, v in asdict(self).items()}


def partition_files(base: lake.Location, dataset: str, day: dt.date) -> list[lake.Location]:
    """The data files of one lake partition (temporary and marker files excluded).

    A partition folder without a data file (only its ``_SUCCESS`` marker, or an interrupted
    write) does not count as present.
    """
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
    latest = next((d for d in reversed(candidates) if partition_files(base, LABELS.name, d)), None)
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
        logger.info(
            "the lake starts on %s: training window shortened to %s..%s", first, train_start, train_end
        )
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


def _named(dataset: str, day: dt.date) -> str:
    """A partition as the operator finds it under the lake: ``transactions dt=2026-01-02``."""
    return f"{dataset} {lake.partition_name(day)}"


def check_window(window: Window, settings: Settings | None = None) -> None:
    """Fail with the list of missing partitions unless the lake holds everything ``window`` needs.

    Needed: the transactions of every training and OOT day, every labels partition from the day
    after the first training day to ``latest_labels``, and the customer and merchant feature
    snapshots of the day before each of those days (what the point-in-time join serves).
    """
    from include.mlops import features

    s = resolve_settings(settings)
    base = lake.root("lake", s)
    days = [*window.train_days, *window.oot_days]
    needed = [(TRANSACTIONS.name, d) for d in days] + [(LABELS.name, d) for d in window.label_days]
    missing = [_named(dataset, d) for dataset, d in needed if not partition_files(base, dataset, d)]
    for d in days:
        before = d - dt.timedelta(days=1)
        for view in ("customer", "merchant"):
            if not lake.exists(features.snapshot_location(view, before, s)):
                missing.append(_named(lake.feature_snapshots(view), before))
    if missing:
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise TrainingDataError(
            f"training as of {window.as_of} ({window.describe()}) needs partitions missing from "
            f"{base.url}: {shown}. Ingest or backfill those days (and run materialize_features for "
            "the feature snapshots), or train with a shorter window."
        )
