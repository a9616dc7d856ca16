"""The whole lifecycle under a real scheduler, replayed in time order the way `make demo` replays it.

A short replay on fixed dates (so the simulated world, and every decision taken on it, is the same
on every run): 21 days, a bad drop on day 1, the first model as of day 10, drift from day 11, a
weekly nightly training, and a drift retrain that waits for three labelled drifted days. Proven:
every good day lands in every store and the bad one is quarantined; each day is scored by the
champion in force that day (a promotion on night D serves D+1); the nightly runs are `scheduled`
or `backfill` runs with their decision recorded; the drift retrain waited for its drifted days'
labels, learnt from them, was promoted, and the days after it are scored by it with their drift,
measured against its own reference, under the policy's threshold; each report button of a
drift check and a training opens its report; and a REST backfill of two days leaves every store
unchanged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import urllib.request
from typing import TYPE_CHECKING

import pytest

from include.devtools import demo as demo_module
from include.devtools import replay as replay_module

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2700)]

TODAY = dt.date(2026, 3, 1)
DAYS, ROWS, DRIFT_DAY, FIRST_TRAINING_DAY, SEED = 21, 6000, 11, 10, 11
PLAN = demo_module.plan(DAYS, ROWS, DRIFT_DAY, SEED, TODAY, first_training_day=FIRST_TRAINING_DAY)
PLAN.train_window_days, PLAN.oot_days = 3, 1
RETRAIN_LABELLED_DAYS = 3

# What the scheduler's processes run with, on top of the stack's own home and port. Small days
# carry few frauds: the floors are lowered so the mechanism, not the model quality, is tested.
AIRFLOW_STACK_ENV = {
    "MLOPS_TRAIN_CRON": PLAN.cron,
    "MLOPS_PROMOTION_MIN_PR_AUC": "0.05",
    "MLOPS_PROMOTION_MIN_RECALL_AT_1PCT_FPR": "0.0",
    "MLOPS_PROMOTION_BOOTSTRAP": "200",
    # A day of 6,000 payments has no region with enough good payments to judge its false-positive
    # rate: reported, not gated (the audit's rules are proven in the promotion tiers).
    "MLOPS_PROMOTION_FAIRNESS_MIN_NEGATIVES": "100000",
    "MLOPS_DRIFT_MIN_POSITIVES": "5",
    "MLOPS_DRIFT_RETRAIN_LABELLED_DAYS": str(RETRAIN_LABELLED_DAYS),
    "MLOPS_DRIFT_RETRAIN_OOT_DAYS": "1",
    "MLOPS_DRIFT_RETRAIN_WINDOW_DAYS": "8",
    "MLOPS_SEED": str(SEED),
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


def _champion_of(lake: Path, day: str) -> int | None:
    path = lake / "predictions" / f"dt={day}" / "part-00000.parquet"
    if not path.exists():
        return None
    (version,) = set(_predictions(lake, day)["champion_version"])
    return int(version)


def _verdict(home: Path, day: str) -> dict:
    import json

    return json.loads((home / "reports" / "drift" / f"dt={day}" / "verdict.json").read_text())


@pytest.fixture(scope="module")
def replay(airflow_stack, monkeypatch_module):
    from include.mlops.core import settings as settings_module

    stack = airflow_stack
    for key, value in {**AIRFLOW_STACK_ENV, "MLOPS_HOME": str(stack.home)}.items():
        monkeypatch_module.setenv(key, value)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch_module.delenv(name, raising=False)  # the home's own store
    settings_module.settings.cache_clear()
    staging = str(stack.home / "simulated")
    lines: list[str] = []
    demo_module.stage(PLAN, staging, log=lines.append)
    tracker = replay_module.run_pipeline(
        PLAN, stack.client, staging, str(stack.home / "landing"), timeout=2100, log=lines.append
    )
    yield stack, PLAN, tracker, lines
    settings_module.settings.cache_clear()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def trainings(replay) -> list[dict]:
    """Every training run of the replay with its decision (``outcome``, ``challenger_version``)."""
    from include.devtools import demo_report

    _stack, _plan, tracker, _ = replay
    out = []
    for run in tracker.trainings():
        result = demo_report.training_outcome(tracker.client, run["dag_run_id"]) or {}
        out.append({**run, "as_of": replay_module.training_as_of(run), **result})
    return out


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
        assert (lake / "predictions" / f"dt={key}" / "part-00000.parquet").exists(), key
        assert (stack.home / "reports" / "drift" / f"dt={key}" / "verdict.json").exists(), key


def test_the_bad_drop_is_quarantined_while_the_other_days_complete(replay):
    stack, plan, tracker, _ = replay
    bad = plan.bad_day.isoformat()
    states = tracker.states("ingest_transactions", plan.keys)
    assert states[bad] == "failed"
    quarantine = stack.home / "quarantine" / "transactions" / f"dt={bad}"
    assert (quarantine / "rejection.json").exists()
    assert "amount" in (quarantine / "rejection.json").read_text()
    assert (stack.home / "landing" / "transactions" / f"dt={bad}" / "_SUCCESS").exists(), "landing kept"
    others = {k: s for k, s in states.items() if k != bad}
    assert set(others.values()) == {"success"} and len(others) == len(plan.keys) - 1


def test_each_day_is_scored_by_the_champion_in_force_that_day(replay, trainings):
    """A promotion on night D changes who scores D+1, never D itself nor a day later than D+1."""
    stack, plan, _tracker, _ = replay
    lake = stack.home / "lake"
    promoted = sorted(
        (t["as_of"], t["challenger_version"]) for t in trainings if t.get("outcome") == "promoted"
    )
    assert promoted and promoted[0][0] == plan.first_training_as_of
    for key in plan.scored_keys:
        day = dt.date.fromisoformat(key)
        in_force = [version for night, version in promoted if night < day][-1]
        assert _champion_of(lake, key) == in_force, (key, promoted)


def test_nightly_runs_are_scheduled_or_backfill_runs_with_their_decision(replay, trainings):
    _stack, plan, _tracker, _ = replay
    # A drift retrain may train on a nightly night too (its labels complete that day): it has a reason.
    nightly = [
        t for t in trainings if t["as_of"] in plan.nightly_nights and not (t.get("conf") or {}).get("reason")
    ]
    assert {t["as_of"] for t in nightly} == set(plan.nightly_nights)
    for run in nightly:
        assert run["run_type"] in ("scheduled", "backfill"), run
        assert run["state"] == "success" and run.get("outcome") in (
            "promoted",
            "kept_champion",
            "rejected",
        ), run


def test_the_drift_retrain_waited_for_its_drifted_days_then_learnt_and_served_them(replay, trainings):
    stack, plan, tracker, lines = replay
    lake = stack.home / "lake"
    drift = [t for t in trainings if (t.get("conf") or {}).get("reason", "").startswith("drift on ")]
    assert drift, "no drift retrain; " + "\n".join(lines[-30:])
    retrain = drift[0]
    requested = dt.date.fromisoformat(retrain["dag_run_id"].removeprefix("drift__"))
    assert plan.drift_from <= requested <= plan.drift_from + dt.timedelta(days=2)
    assert _verdict(stack.home, requested.isoformat())["retrain"] is True
    # It waited until its drifted days were fully labelled (label delay: 5 days).
    assert retrain["as_of"] == requested + dt.timedelta(days=RETRAIN_LABELLED_DAYS - 1 + 5)
    tis = {t["task_id"]: t for t in stack.client.task_instances("train_model", retrain["dag_run_id"])}
    labels_in = [
        r for r in tracker.runs("ingest_labels") if r.get("partition_key") == retrain["as_of"].isoformat()
    ]
    assert tis["train"]["start_date"] > labels_in[-1]["end_date"]
    # It was judged on drifted days, learnt from drifted days too, and won.
    assert retrain["outcome"] == "promoted", retrain
    from include.mlops import registry
    from include.mlops.core.settings import settings

    client = registry.configure_mlflow(settings())
    version = client.get_model_version(settings().model_name, str(retrain["challenger_version"]))
    window = {k: dt.date.fromisoformat(version.tags[k]) for k in ("oot_start", "train_end")}
    assert window["oot_start"] >= requested and window["train_end"] >= requested, version.tags
    assert version.tags.get("reason", "").startswith(f"drift on {requested}")
    # The days after it are scored by it, and their drift against its reference is under the threshold.
    after = [k for k in plan.keys if k > retrain["as_of"].isoformat()]
    assert after, "the replay ends before any day is scored by the drift retrain"
    for key in after:
        assert _champion_of(lake, key) == retrain["challenger_version"], key
        verdict = _verdict(stack.home, key)
        assert verdict["drift_share"] < verdict["policy"]["drift_share"], (key, verdict["explanation"])


def _open(stack, link: str) -> int:
    url = link if link.startswith("http") else stack.base_url + link
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {stack.client.token()}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status


def test_the_report_buttons_of_a_drift_check_and_a_training_open_their_reports(replay, trainings):
    stack, plan, _tracker, _ = replay
    key = plan.scored_keys[-1]
    check = [r for r in stack.client.dag_runs("monitor_drift") if r.get("partition_key") == key][-1]
    base = f"/api/v2/dags/monitor_drift/dagRuns/{urllib.request.quote(check['dag_run_id'], safe='')}"
    links = stack.client.get(f"{base}/taskInstances/check_drift/links")["extra_links"]
    assert links["Evidently drift report"] and links["MLflow run"], links
    assert _open(stack, links["Evidently drift report"]) == 200
    assert _open(stack, links["MLflow run"]) == 200
    promoted = [t for t in trainings if t.get("outcome") == "promoted"][-1]
    run_id = urllib.request.quote(promoted["dag_run_id"], safe="")
    for task in ("train", "evaluate_and_promote"):
        links = stack.client.get(f"/api/v2/dags/train_model/dagRuns/{run_id}/taskInstances/{task}/links")
        link = links["extra_links"]["MLflow run"]
        assert link and _open(stack, link) == 200, (task, links)


def test_the_summary_page_shows_every_day_with_its_chart(replay):
    from include.devtools import demo_report

    stack, plan, tracker, _ = replay
    days = demo_report.day_rows(plan, tracker)
    page = demo_report.html_page(plan, days, demo_report.training_rows(tracker), plan.cadence)
    loc = demo_report.write_page(page)
    assert _open(stack, "/mlops/reports/demo/index.html") == 200
    assert "<svg" in page and all(key in page for key in plan.keys)
    assert loc.url.endswith("reports/demo/index.html")


def test_a_rest_backfill_of_two_days_leaves_every_store_unchanged(replay):
    stack, plan, tracker, _lines = replay
    lake = stack.home / "lake"
    stores = ("transactions", "labels", "features", "predictions")
    before = {s: _fingerprints(lake / s) for s in stores}
    days = [plan.keys[-3], plan.keys[-2]]
    before_predictions = {day: _predictions(lake, day) for day in days}
    counts = {d: len(tracker.runs(d)) for d in replay_module.PIPELINE}
    trainings_before = {r["dag_run_id"] for r in tracker.runs("train_model")}
    stack.client.backfill("ingest_transactions", f"{days[0]}T00:00:00Z", f"{days[1]}T00:00:00Z")
    stack.wait_until(
        lambda: (
            len(tracker.runs("materialize_features")) >= counts["materialize_features"] + 2
            and len(tracker.runs("score_transactions")) >= counts["score_transactions"] + 2
            and len(tracker.runs("monitor_drift")) >= counts["monitor_drift"] + 2
            and all(tracker.settled(d, days) for d in ("materialize_features", "score_transactions"))
            and tracker.settled("monitor_drift", days)
        ),
        900,
        "the backfilled days to flow through features, scoring and monitoring",
        every=5,
    )
    assert demo_module.failures(plan, tracker) == []
    after = {s: _fingerprints(lake / s) for s in stores}
    for store in ("transactions", "labels", "features"):
        assert after[store] == before[store], f"{store} changed after a rerun of {days}"
    # Predictions record the models that scored them (recorded versions are reused): the day still
    # has one file, the same payments, and the same champion scores.
    assert after["predictions"].keys() == before["predictions"].keys()
    for day in days:
        old, new = before_predictions[day], _predictions(lake, day)
        assert new["transaction_id"].is_unique and set(new["transaction_id"]) == set(old["transaction_id"])
        merged = old.merge(new, on="transaction_id", suffixes=("_old", "_new"))
        assert (merged["score_champion_old"] == merged["score_champion_new"]).all(), day
    # A rerun never asks twice for a day's retrain; a day whose cooldown has passed since the last
    # request may ask (once, under its own run id), as it would have the first time.
    new = {r["dag_run_id"] for r in tracker.runs("train_model")} - trainings_before
    assert all(run_id in {f"drift__{day}" for day in days} for run_id in new), new
    assert os.path.exists(stack.home / "reports" / "drift" / f"dt={days[0]}" / "verdict.json")
