"""``score_day`` killed at each of its writes, on a copy of the scored world with its champion.

After every kill ``scoring.read_predictions`` sees the day's predictions whole or not at all, and a
rerun writes the same bytes as an uninterrupted run.
"""

from __future__ import annotations

import io
import shutil
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest

from include.mlops import features, lake, scoring
from tests.faults.harness import Stage, kill_everywhere, partition_problems
from tests.integration.scored_world import SCORING_DAY, day

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tests.faults.harness import Sandbox
    from tests.integration.scored_world import World

pytestmark = pytest.mark.integration

SCORE = "include.mlops.scoring:score_day"
PRELOAD = (
    "include.mlops.scoring",
    "include.mlops.features",
    "include.mlops.registry",
    "feast",
    "mlflow",
    "mlflow.xgboost",
    "xgboost",
    "duckdb",
    "pandas",
)
DAY = day(SCORING_DAY)


def _rows(files: Mapping[str, bytes], path: str) -> int | None:
    data = files.get(path)
    return None if data is None else pq.ParquetFile(io.BytesIO(data)).metadata.num_rows


def _readers(before: Mapping[str, bytes], after: Mapping[str, bytes]) -> list[str]:
    key = f"lake/{lake.PREDICTIONS}/{lake.partition_name(DAY)}/{lake.DATA_FILE}"
    allowed = {_rows(before, key), _rows(after, key)}
    problems = partition_problems(scoring.predictions_location(DAY).url, allowed)
    try:
        seen = len(scoring.read_predictions(DAY))
    except FileNotFoundError:
        seen = None
    except Exception as exc:
        return [*problems, f"scoring.read_predictions({DAY}) failed: {type(exc).__name__}: {exc}"]
    if seen not in allowed:
        problems.append(
            f"scoring.read_predictions({DAY}) saw {seen} rows, expected one of {sorted(allowed, key=str)}"
        )
    return problems


def test_a_scored_day_is_whole_whatever_write_it_is_killed_at(sandbox: Sandbox, shared_scored_world: World):
    shutil.rmtree(sandbox.home)
    shutil.copytree(shared_scored_world.home, sandbox.home)
    # The copy's Feast sources read the copy's lake; the MLflow artifacts stay the world's (read only).
    features.apply_definitions()
    lake.delete(scoring.predictions_location(DAY))
    sandbox.freeze()
    stage = Stage(SCORE, DAY)
    drill = kill_everywhere(sandbox, stage, _readers, preload=PRELOAD)
    print(f"\n{stage.target}: {drill.summary()}")
    assert not drill.problems, drill.report()
