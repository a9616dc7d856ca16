"""A tiny lake under ``tmp_path``: the partitions the training rules look at, and nothing else; and
point-in-time features made from the payment's id, for the rules that do not need Feast's."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pytest

from include.mlops import features, lake
from include.mlops.core.settings import load_settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path

    import pandas as pd

    from include.mlops.core.settings import Settings

LAKE_START = dt.date(2026, 1, 1)
LAKE_END = dt.date(2026, 1, 25)


def lake_days(first: dt.date = LAKE_START, last: dt.date = LAKE_END) -> list[dt.date]:
    """Every day from ``first`` to ``last``, both included."""
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


@pytest.fixture
def tiny_settings(tmp_path: Path) -> Settings:
    """Settings whose lake and reports live under ``tmp_path`` (nothing read from the environment)."""
    return load_settings({"MLOPS_HOME": str(tmp_path / "home")})


@pytest.fixture
def empty_partitions(tiny_settings: Settings) -> Callable[..., None]:
    """Write empty data files: the window rules look at which partitions exist, not inside them."""

    def write(dataset: str, days: Iterable[dt.date]) -> None:
        base = lake.root("lake", tiny_settings)
        for day in days:
            lake.write_bytes(lake.partition_at(base, dataset, day).join(lake.DATA_FILE), b"")

    return write


@pytest.fixture
def empty_snapshots(tiny_settings: Settings) -> Callable[..., None]:
    """Write empty customer and merchant feature snapshots of ``days``."""

    def write(days: Iterable[dt.date]) -> None:
        for day in days:
            for view in ("customer", "merchant"):
                lake.write_bytes(features.snapshot_location(view, day, tiny_settings), b"")

    return write


def id_number(transaction_id: str) -> float:
    """The number a test payment's id carries (``t20260301-0042`` -> 202603010042)."""
    return float(transaction_id[1:9] + transaction_id[-4:])


def fake_feature_values(amounts: Iterable[float]) -> dict[str, list[float]]:
    """Feature ``j`` of a payment: its amount divided by ``j + 1`` (a float64 that float32 rounds).
    With :func:`id_number` as the amount, a row's features say which payment they belong to."""
    values = list(amounts)
    return {name: [a / (j + 1) for a in values] for j, name in enumerate(features.FEATURE_COLUMNS)}


def fake_features_in_chunks(
    frame: pd.DataFrame, chunk_rows: int, settings: Settings | None = None
) -> Iterator[pd.DataFrame]:
    """``features.features_in_chunks`` by its contract (slices in order, indexed by position, one
    empty result for no rows) with :func:`fake_feature_values`: Feast is the integration tier's."""
    import pandas as pd

    for start in range(0, max(len(frame), 1), chunk_rows):
        chunk = frame.iloc[start : start + chunk_rows].reset_index(drop=True)
        values = pd.DataFrame(fake_feature_values(chunk["amount"]), index=chunk.index)
        joined = pd.concat([chunk, values], axis=1)
        joined.index = pd.RangeIndex(start, start + len(joined))
        yield joined


@pytest.fixture
def fake_feast(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Point-in-time features from :func:`fake_features_in_chunks`; the list of the rows of each
    chunk served, as they are served."""
    served: list[int] = []

    def chunks(
        frame: pd.DataFrame, chunk_rows: int, settings: Settings | None = None
    ) -> Iterator[pd.DataFrame]:
        for chunk in fake_features_in_chunks(frame, chunk_rows, settings):
            served.append(len(chunk))
            yield chunk

    monkeypatch.setattr(features, "features_in_chunks", chunks)
    return served
