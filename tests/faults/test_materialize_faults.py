"""``materialize_day`` killed at each of its writes: Feast's registry and online store.

After every kill the online store serves, view by view, the day before or the day itself, and a
rerun leaves it serving exactly what an uninterrupted run does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from include.mlops import features, lake
from include.mlops.core.schema import TRANSACTIONS
from include.mlops.features.contract import (
    CUSTOMER_FEATURES,
    ENTITY_KEYS,
    FEATURE_COLUMNS,
    MERCHANT_FEATURES,
    REQUEST_FIELDS,
)
from tests.faults.conftest import feature_day, write_lake_days
from tests.faults.harness import Stage, kill_everywhere

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas as pd

    from tests.faults.harness import Sandbox

pytestmark = pytest.mark.integration

MATERIALIZE = "include.mlops.features:materialize_day"
PRELOAD = ("include.mlops.features", "feast", "sqlalchemy", "duckdb", "pandas", "pyarrow.parquet")
VIEWS = {
    view: [c for c in FEATURE_COLUMNS if c in {name for name, _ in names}]
    for view, names in (("customer", CUSTOMER_FEATURES), ("merchant", MERCHANT_FEATURES))
}
"""The served columns of each snapshot view."""
PAYMENTS = 60


def _entity_rows() -> list[dict]:
    """Payments of the day after the materialized one: the rows a live request would send."""
    folder = lake.partition("lake", TRANSACTIONS.name, feature_day(4))
    table = lake.read_table(folder, [*ENTITY_KEYS, *REQUEST_FIELDS]).slice(0, PAYMENTS)
    return table.to_pylist()


class _Online:
    """What the online store serves for :func:`_entity_rows`: before the stage, after it, now."""

    def __init__(self) -> None:
        self.rows = _entity_rows()
        self.old = self.read()
        self.new: pd.DataFrame | None = None

    def read(self) -> pd.DataFrame:
        return features.online_features(self.rows)

    def remember_new(self) -> None:
        self.new = self.read()
        assert not self.new.equals(self.old), "the day materialized changes nothing that is served"

    def readers(self, before: Mapping[str, bytes], after: Mapping[str, bytes]) -> list[str]:
        """Each view serves the day before (the whole view) or the day itself (the whole view)."""
        try:
            now = self.read()
        except Exception as exc:
            return [f"online_features failed: {type(exc).__name__}: {exc}"]
        problems = []
        for view, columns in VIEWS.items():
            if not (now[columns].equals(self.old[columns]) or now[columns].equals(self.new[columns])):
                mixed = sum(
                    not (now[columns].iloc[[i]].equals(self.old[columns].iloc[[i]]))
                    and not (now[columns].iloc[[i]].equals(self.new[columns].iloc[[i]]))
                    for i in range(len(now))
                )
                problems.append(
                    f"online_features: the {view} view serves neither the day before nor the day "
                    f"as a whole ({mixed} of {len(now)} rows match neither)"
                )
        return problems

    def converged(self) -> list[str]:
        now = self.read()
        return (
            [] if now.equals(self.new) else ["online_features serves other values than the uninterrupted run"]
        )


def test_a_materialized_day_is_served_whole_whatever_write_it_is_killed_at(sandbox: Sandbox):
    write_lake_days(4)
    for n in (1, 2, 3):
        features.compute_features_for_day(feature_day(n))
    # The deploy step, as the local Airflow runs it at start-up: materializing never registers.
    features.apply_definitions()
    features.materialize_day(feature_day(2))
    sandbox.freeze()
    online = _Online()
    stage = Stage(MATERIALIZE, feature_day(3))
    drill = kill_everywhere(
        sandbox,
        stage,
        online.readers,
        preload=PRELOAD,
        after_baseline=online.remember_new,
        after_rerun=online.converged,
    )
    where = "\n  ".join(p.where for p in drill.points)
    print(f"\n{stage.target}: {len(drill.points)} kill points in {drill.seconds:.1f} s:\n  {where}")
    written = {p.where for p in drill.points if p.where.startswith("feast.online_write ")}
    assert len(written) == len(VIEWS), f"each view's online write is a kill point: {where}"
    assert not drill.problems, drill.report()
