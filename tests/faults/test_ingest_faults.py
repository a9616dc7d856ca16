"""``ingest_day`` killed at each of its writes: a good drop, a drop over a quarantined day, a bad drop.

After every kill each reader sees a day's partition and reports whole or not at all, the landing
drop is untouched, and a rerun leaves exactly what an uninterrupted run leaves.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest

from include.devtools.simulator import write_drop
from include.mlops import lake
from include.mlops.core.settings import settings
from include.mlops.ingest import DropRejected, ingest_day, partition_url, settled
from tests.faults.harness import Stage, kill_everywhere, partition_problems
from tests.integration.bad_drops import good_table, with_values

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tests.faults.harness import Sandbox

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 1, 5)
DATASET = "transactions"
INGEST = "include.mlops.ingest:ingest_day"
PRELOAD = ("include.mlops.ingest", "great_expectations", "pandas", "pyarrow.parquet", "pyarrow.csv")


def _rows(files: Mapping[str, bytes], path: str) -> int | None:
    data = files.get(path)
    return None if data is None else pq.ParquetFile(io.BytesIO(data)).metadata.num_rows


def _readers(before: Mapping[str, bytes], after: Mapping[str, bytes]) -> list[str]:
    """The ingestion's readers: the lake partition, where the day settled, its quarantine report."""
    import json

    folder = partition_url("lake", DATASET, DAY)
    key = f"lake/{DATASET}/{lake.partition_name(DAY)}/{lake.DATA_FILE}"
    problems = partition_problems(folder, {_rows(before, key), _rows(after, key)})
    where = settled(DATASET, DAY)
    if where == "quarantine":
        rejection = lake.location(partition_url("quarantine", DATASET, DAY)).join("rejection.json")
        try:
            body = json.loads(lake.read_bytes(rejection))
        except ValueError as exc:
            problems.append(f"settled() says quarantine but rejection.json is not whole: {exc}")
        else:
            if body.get("day") != DAY.isoformat():
                problems.append(f"rejection.json of another day: {body.get('day')}")
    return problems


def _drill(sandbox: Sandbox, expect_outcome: str) -> None:
    sandbox.freeze()
    stage = Stage(INGEST, DAY, args=(DATASET,), tolerate=("DropRejected",))
    drill = kill_everywhere(sandbox, stage, _readers, preload=PRELOAD, warm_up=True)
    print(f"\n{stage.target}: {drill.summary()}")
    assert drill.outcome == expect_outcome
    assert not drill.problems, drill.report()
    assert not drill.leftovers, f"temporary files left after a rerun: {drill.leftovers}"


def test_a_good_drop_lands_whole_whatever_write_it_is_killed_at(sandbox: Sandbox):
    write_drop(settings().landing_url, DATASET, DAY, good_table(DATASET, DAY))
    _drill(sandbox, "ok")


def test_a_corrected_drop_replaces_the_day_whole_whatever_write_it_is_killed_at(sandbox: Sandbox):
    """The day landed, then a bad redrop was quarantined (the lake kept the first version), then
    the corrected drop: it replaces the partition, publishes its report and clears the quarantine."""
    landing = settings().landing_url
    first = good_table(DATASET, DAY)
    write_drop(landing, DATASET, DAY, first.slice(0, first.num_rows - 100))
    ingest_day(DATASET, DAY)
    write_drop(landing, DATASET, DAY, with_values(first, "amount", {3: -12.5}))
    with pytest.raises(DropRejected):
        ingest_day(DATASET, DAY)
    write_drop(landing, DATASET, DAY, first)
    _drill(sandbox, "ok")


def test_a_bad_drop_is_quarantined_whole_whatever_write_it_is_killed_at(sandbox: Sandbox):
    bad = good_table(DATASET, DAY)
    write_drop(settings().landing_url, DATASET, DAY, with_values(bad, "amount", {3: -12.5}))
    _drill(sandbox, "DropRejected")
