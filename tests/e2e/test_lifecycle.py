"""The whole lifecycle under a real scheduler, driven the way `make demo` drives it.

A short replay (14 days, drift from day 11, a bad drop on day 9, outside every training window):
every good day lands in the lake, the feature store and the predictions; the first model becomes
champion; the drift monitor triggers `train_model` with its reason; the bad day is quarantined
while the others complete; and a REST backfill of two days leaves every store unchanged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from typing import TYPE_CHECKING

import pytest

from include.devtools import demo as demo_module

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

DAYS, ROWS, DRIFT_DAY, FIRST_TRAINING_DAY, BAD_DAY = 14, 4000, 11, 10, 9

# What the scheduler's processes run with, on top of the stack's own home and port. Small days
# carry few frauds: the floors are lowered so the mechanism, not the model quality, is tested.
AIRFLOW_STACK_ENV = {
    "MLOPS_TRAIN_CRON": "none",
    "MLOPS_PROMOTION_MIN_PR_AUC": "0.05",
    "MLOPS_PROMOTION_MIN_RECALL_AT_1PCT_FPR": "0.0",
    "MLOPS_PROMOTION_BOOTSTRAP": "200",
    "MLOPS_DRIFT_MIN_POSITIVES": "5",
    "MLOPS_SEED": "11",
}


def _fingerprints(root: Path) -> dict[str, str]:
    """sha256 of every data file under a store (hidden temporary names excluded)."""
    out = {}
    for path in sorted(root.rglob("*.parquet")):
        if not any(part.startswith(".") for part in path.parts):
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _predictions(lake: Path, day: str):
    import pandas as pd

    return pd.read_parquet(lake / "predictions" / f"dt={day}" / "part-00000.parquet")


@pytest.fixture(scope="module")
def replay(airflow_stack, monkeypatch_module):
    from include.devtools.simulator import SimulationConfig, simulate, transactions_for_day, write_drop
    from include.mlops.core import settings as settings_module

    stack = airflow_stack
    for key, value in {**AIRFLOW_STACK_ENV, "MLOPS_HOME": str(stack.home)}.items():
        monkeypatch_module.setenv(key, value)
    settings_module.settings.cache_clear()
    today = dt.datetime.now(dt.UTC).date()
    plan = demo_module.plan(DAYS, ROWS, DRIFT_DAY, 11, today, first_training_day=FIRST_TRAINING_DAY)
    plan.train_window_days, plan.oot_days = 3, 1
    plan.bad_day = plan.start + dt.timedelta(days=BAD_DAY - 1)
    simulate(
        plan.start,
        plan.days,
        SimulationConfig(seed=11, rows_per_day=ROWS, drift_from=plan.drift_from),
        str(stack.home / "landing"),
    )
    # A bad drop mid-range: negative amounts in an otherwise valid day.
    table = transactions_for_day(
        plan.bad_day, SimulationConfig(seed=11, rows_per_day=ROWS, drift_from=plan.drift_from)
    )
    amounts = table.column("amount").to_pylist()
    amounts[:25] = [-abs(a) - 1 for a in amounts[:25]]
    import pyarrow as pa

    bad = table.set_column(table.schema.get_field_index("amount"), "amount", pa.array(amounts, pa.float64()))
    write_drop(str(stack.home / "landing"), "transactions", plan.bad_day, bad)

    lines: list[str] = []
    tracker = demo_module.run_pipeline(plan, stack.client, timeout=1500, log=lines.append)
    yield stack, plan, tracker, lines
    settings_module.settings.cache_clear()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_every_good_day_reaches_every_store(replay):
    stack, plan, tracker, lines = replay
    lake = stack.home / "lake"
    bad = plan.bad_day.isoformat()
    assert demo_module.failures(plan, tracker) == [], "\n".join(lines[-40:])
    for key in plan.keys:
        txn = lake / "transactions" / f"dt={key}" / "part-00000.parquet"
        assert txn.exists() == (key != bad), key
        assert (lake / "labels" / f"dt={key}" / "part-00000.parquet").exists(), key
        if key != bad:
            assert (lake / "features" / "customer" / f"dt={key}" / "part-00000.parquet").exists(), key
    for key in plan.scored_keys:
        if key != bad:
            assert (lake / "predictions" / f"dt={key}" / "part-00000.parquet").exists(), key


def test_the_bad_drop_is_quarantined_while_the_other_days_complete(replay):
    stack, plan, tracker, _ = replay
    bad = plan.bad_day.isoformat()
    assert tracker.states("ingest_transactions")[bad] == "failed"
    quarantine = stack.home / "quarantine" / "transactions" / f"dt={bad}"
    assert (quarantine / "rejection.json").exists()
    assert "amount" in (quarantine / "rejection.json").read_text()
    assert (stack.home / "landing" / "transactions" / f"dt={bad}" / "_SUCCESS").exists(), "landing kept"
    others = {k: s for k, s in tracker.states("ingest_transactions").items() if k != bad}
    assert set(others.values()) == {"success"} and len(others) == len(plan.keys) - 1


def test_a_champion_serves_and_drift_triggered_a_retrain_with_its_reason(replay):
    _stack, plan, tracker, lines = replay
    from mlflow import MlflowClient

    from include.mlops.core.settings import settings

    client = MlflowClient(settings().mlflow_tracking_uri)
    champion = client.get_model_version_by_alias(settings().model_name, "champion")
    assert int(champion.version) >= 1
    runs = tracker.runs("train_model")
    reasons = [(r.get("conf") or {}).get("reason", "") for r in runs]
    drift_runs = [r for r, why in zip(runs, reasons, strict=True) if why.startswith("drift on ")]
    assert drift_runs, f"no drift-triggered train_model run; reasons: {reasons}\n" + "\n".join(lines[-30:])
    assert all(r["state"] == "success" for r in runs), [(r["dag_run_id"], r["state"]) for r in runs]
    trigger_day = drift_runs[0]["conf"]["as_of"]
    assert trigger_day <= (plan.drift_from + dt.timedelta(days=2)).isoformat()
    # The reason reached the MLflow run of the retrain.
    tagged = client.search_model_versions(f"name='{settings().model_name}'")
    assert any((v.tags or {}).get("reason", "").startswith("drift on ") for v in tagged), [
        v.tags for v in tagged
    ]


def test_a_rest_backfill_of_two_days_leaves_every_store_unchanged(replay):
    stack, plan, tracker, _lines = replay
    lake = stack.home / "lake"
    stores = ("transactions", "labels", "features", "predictions")
    before = {s: _fingerprints(lake / s) for s in stores}
    days = [plan.keys[-4], plan.keys[-3]]
    before_predictions = {day: _predictions(lake, day) for day in days}
    counts = {d: len(tracker.runs(d)) for d in demo_module.PIPELINE}
    stack.client.backfill("ingest_transactions", f"{days[0]}T00:00:00Z", f"{days[1]}T00:00:00Z")
    stack.wait_until(
        lambda: (
            len(tracker.runs("materialize_features")) >= counts["materialize_features"] + 2
            and len(tracker.runs("score_transactions")) >= counts["score_transactions"] + 2
            and len(tracker.runs("monitor_drift")) >= counts["monitor_drift"] + 2
            and tracker.idle(demo_module.PIPELINE)
        ),
        900,
        "the backfilled days to flow through features, scoring and monitoring",
        every=5,
    )
    assert demo_module.failures(plan, tracker) == []
    after = {s: _fingerprints(lake / s) for s in stores}
    for store in ("transactions", "labels", "features"):
        assert after[store] == before[store], f"{store} changed after a rerun of {days}"
    # Predictions record the models that scored them: a challenger registered since the first
    # scoring now scores in shadow. The day still has one file, the same payments, and the same
    # champion scores when the champion is the same version.
    assert after["predictions"].keys() == before["predictions"].keys()
    for day in days:
        old, new = before_predictions[day], _predictions(lake, day)
        assert new["transaction_id"].is_unique and set(new["transaction_id"]) == set(old["transaction_id"])
        if set(old["champion_version"]) == set(new["champion_version"]):
            merged = old.merge(new, on="transaction_id", suffixes=("_old", "_new"))
            assert (merged["score_champion_old"] == merged["score_champion_new"]).all(), day
    assert len(tracker.runs("train_model")) == counts["train_model"], "a rerun must not retrain again"
    assert os.path.exists(stack.home / "reports" / "drift" / f"dt={days[0]}" / "verdict.json")
