"""``compute_features_for_day`` killed at each of its writes: summaries and both snapshots.

After every kill each reader of the features (the lake partitions of the snapshots and summaries,
and the glob Feast's offline store reads) sees a file whole or not at all, and a rerun writes the
same bytes as an uninterrupted run.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest

from include.mlops import features, lake
from include.mlops.core.settings import settings
from include.mlops.features.contract import SNAPSHOT_VIEWS
from tests.faults.conftest import feature_day, write_lake_days
from tests.faults.harness import Stage, glob_problems, kill_everywhere, partition_problems

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tests.faults.harness import Sandbox

pytestmark = pytest.mark.integration

FEATURES = "include.mlops.features:compute_features_for_day"
PRELOAD = ("include.mlops.features", "duckdb", "pyarrow.parquet", "pyarrow.compute", "numpy")


def _rows(files: Mapping[str, bytes], path: str) -> int | None:
    data = files.get(path)
    return None if data is None else pq.ParquetFile(io.BytesIO(data)).metadata.num_rows


def _dataset_folders(files: Mapping[str, bytes], day_name: str) -> set[str]:
    """The lake datasets (relative to the lake) that have a partition of the day in ``files``."""
    return {
        path[len("lake/") : path.index(f"/{day_name}/")]
        for path in files
        if path.startswith("lake/features/") and f"/{day_name}/" in path
    }


def _readers_of(day_number: int):
    day = feature_day(day_number)

    def readers(before: Mapping[str, bytes], after: Mapping[str, bytes]) -> list[str]:
        s = settings()
        problems = []
        for dataset in sorted(_dataset_folders(after, lake.partition_name(day))):
            key = f"lake/{dataset}/{lake.partition_name(day)}/{lake.DATA_FILE}"
            folder = lake.partition_url(s.lake_url, dataset, day)
            problems += partition_problems(folder, {_rows(before, key), _rows(after, key)})
        for view in SNAPSHOT_VIEWS:
            pattern = lake.partition_glob("", lake.feature_snapshots(view)).lstrip("/")
            problems += glob_problems(Path(lake.location(s.lake_url).path), pattern, before, after)
        return problems

    return readers


def test_a_day_of_features_is_whole_whatever_write_it_is_killed_at(sandbox: Sandbox):
    write_lake_days(3)
    for n in (1, 2):
        features.compute_features_for_day(feature_day(n))
    sandbox.freeze()
    stage = Stage(FEATURES, feature_day(3))
    drill = kill_everywhere(sandbox, stage, _readers_of(3), preload=PRELOAD, warm_up=True)
    print(f"\n{stage.target}: {drill.summary()}")
    assert not drill.problems, drill.report()
    assert not drill.leftovers, f"temporary files left after a rerun: {drill.leftovers}"


def test_a_backfilled_day_builds_its_history_whole_whatever_write_it_is_killed_at(sandbox: Sandbox):
    """Out of order: the summaries of the days before are built on the way, each a write point."""
    write_lake_days(3)
    sandbox.freeze()
    stage = Stage(FEATURES, feature_day(3))
    drill = kill_everywhere(sandbox, stage, _readers_of(3), preload=PRELOAD, warm_up=True)
    print(f"\n{stage.target}: {drill.summary()}")
    assert not drill.problems, drill.report()
    assert not drill.leftovers, f"temporary files left after a rerun: {drill.leftovers}"
