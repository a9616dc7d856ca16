"""The promotion gate on real models and a real MLflow (temporary SQLite store): the operating
threshold recorded at registration, the datasets a version learned from, the gate's plots and
tables on the challenger's run, its decision recorded on the version, and the decision flag batch
scoring writes next to each score.

Training runs on the shared simulated lake of test_training.py; the decision flag is read from
the scored world of test_scoring.py (its champion was trained by ``training.train``).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

import pytest

from include.mlops import registry
from include.mlops.core.metrics import TARGET_FPR
from include.mlops.core.schema import CHAMPION_VERSION, FLAGGED_CHAMPION, LABEL, SCORE_CHAMPION
from tests.integration.scored_world import FIRST_SCORED, World, day
from tests.integration.test_promotion import FLOORS
from tests.integration.test_training import AS_OF, OOT_DAYS, WINDOW_DAYS, fraud_lake, lake_settings

if TYPE_CHECKING:
    from include.mlops.core.settings import Settings

pytestmark = pytest.mark.integration

__all__ = ["fraud_lake", "lake_settings"]  # fixtures shared with test_training.py

GATE_PLOTS = ("pr_curve.png", "roc_curve.png", "calibration.png")


def _artifacts(client, run_id: str, folder: str) -> set[str]:
    return {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, folder)}


def _check_registration(s: Settings, result: dict) -> None:
    """The threshold tag, the datasets with their lake source and digest, the feature importance."""
    import mlflow
    import numpy as np

    from include.mlops import promotion

    client, name = registry.configure_mlflow(s), s.model_name
    version = int(result["version"])
    threshold = registry.operating_threshold(client, name, version)
    run = client.get_run(result["run_id"])
    assert threshold is not None and threshold == pytest.approx(run.data.metrics["operating_threshold"])
    # On the version's own out-of-time days, the threshold declines at most 1 % of good payments.
    evaluation = promotion.evaluate(version, None, s)
    flagged = evaluation.challenger.scores >= threshold
    assert evaluation.challenger.threshold == threshold
    assert flagged[evaluation.labels == 0].mean() <= TARGET_FPR
    assert flagged[evaluation.labels == 1].mean() == pytest.approx(run.data.metrics["recall_at_1pct_fpr"])

    inputs = {
        {t.key: t.value for t in d.tags}["mlflow.data.context"]: d.dataset for d in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"training", "evaluation"}
    for context, dataset in inputs.items():
        assert json.loads(dataset.source)["uri"].endswith("lake/transactions"), dataset.source
        assert len(dataset.digest) == 16
        assert LABEL in dataset.schema and "amount_zscore_30d" in dataset.schema
        rows = json.loads(dataset.profile)["num_rows"]
        metrics = run.data.metrics
        expected = (
            metrics["oot_rows"]
            if context == "evaluation"
            else metrics["train_rows"] + metrics["validation_rows"]
        )
        assert rows == expected, context
    assert result["window"]["oot_start"] in inputs["evaluation"].name

    assert {"feature_importance.json", "feature_importance.png"} <= _artifacts(
        client, run.info.run_id, "evaluation"
    )
    table = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/evaluation/feature_importance.json")
    share = dict(zip(table["columns"], np.array(table["data"]).T, strict=True))["share"]
    assert float(np.sum(share.astype(float))) == pytest.approx(1.0)


def _check_gate_records(s: Settings, outcome: dict, champion: int) -> None:
    """The plots, tables and summary on the challenger's run; the short tags and the full report."""
    import mlflow

    client, name = registry.configure_mlflow(s), s.model_name
    run_id = outcome["run_id"]
    files = _artifacts(client, run_id, "evaluation")
    assert {*GATE_PLOTS, "bootstrap.png", "slices.json", "fairness.json", "summary.md"} <= files, files
    slices = mlflow.artifacts.load_dict(f"runs:/{run_id}/evaluation/slices.json")
    rows = [dict(zip(slices["columns"], row, strict=True)) for row in slices["data"]]
    dimensions = {r["slice"].split("=")[0] for r in rows}
    assert dimensions == {"channel", "card_present", "merchant_category", "card_country", "amount_band",
                          "customer_tenure"}  # fmt: skip
    judged = [r for r in rows if r["status"] in ("pass", "fail")]
    assert judged and all(r["interval_low"] <= r["delta_pr_auc"] <= r["interval_high"] for r in judged)
    assert {r["status"] for r in rows} <= {"pass", "fail", "too_small"}
    fairness = mlflow.artifacts.load_dict(f"runs:/{run_id}/evaluation/fairness.json")
    groups = {(row[0], row[1]) for row in fairness["data"]}
    assert ("challenger", "all customers") in groups and ("champion", "euro_area") in groups
    summary = mlflow.artifacts.load_text(f"runs:/{run_id}/evaluation/summary.md")
    assert f"champion v{champion}" in summary and "Gate: **" in summary

    tags = client.get_model_version(name, str(outcome["challenger_version"])).tags
    assert f"{outcome['slices']['judged']} judged" in tags["gate_slices"]
    assert json.loads(tags["gate_fairness"])["bound"] == 2.0
    (report,) = client.list_artifacts(run_id, "promotion")
    body = mlflow.artifacts.load_dict(f"runs:/{run_id}/{report.path}")
    assert len(body["decision"]["slices"]) == len(rows)
    assert body["decision"]["fairness"]["challenger"]["groups"], "every region's rates are in the report"
    assert client.get_run(run_id).data.metrics["promotion_gate_seconds"] > 0


def test_a_trained_version_carries_its_threshold_datasets_and_the_gates_evidence(
    lake_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.mlops import promotion, training

    for name, value in FLOORS.items():
        monkeypatch.setenv(name, value)
    s = lake_settings
    first = training.train(AS_OF - dt.timedelta(days=2), 10, OOT_DAYS, "first", "run-first", s)
    _check_registration(s, first)
    promoted = promotion.evaluate_and_promote_run("run-first")
    assert promoted["promoted"], promoted["reason"]
    assert promoted["slices"]["not_compared"] > 0 and promoted["slices"]["judged"] == 0
    files = _artifacts(registry.configure_mlflow(s), promoted["run_id"], "evaluation")
    assert set(GATE_PLOTS) <= files and "bootstrap.png" not in files  # nothing to compare with yet

    second = training.train(AS_OF, WINDOW_DAYS, OOT_DAYS, "second", "run-second", s)
    outcome = promotion.evaluate_and_promote_run("run-second")
    print(f"\ngate on {outcome['seconds']} (seconds), outcome {outcome['outcome']}: {outcome['reason']}")
    assert outcome["champion_before"] == first["version"]
    assert outcome["operating_threshold"] == registry.operating_threshold(
        registry.configure_mlflow(s), s.model_name, second["version"]
    )
    assert set(outcome) >= {"slices", "fairness", "summary", "experiment_id", "run_id", "seconds"}
    recorded = registry.operating_threshold(registry.configure_mlflow(s), s.model_name, first["version"])
    assert outcome["fairness"]["audited"] and outcome["fairness"]["champion"]["threshold"] == recorded
    _check_gate_records(s, outcome, first["version"])


# --------------------------------------------------------------------------------------------------
# The decision flag of batch scoring (the scored world's champion records its threshold)


def test_predictions_flag_each_score_at_the_champions_operating_threshold(
    world_settings: Settings, scored_world: World
) -> None:
    from include.mlops import scoring

    s = world_settings
    client = registry.configure_mlflow(s)
    threshold = registry.operating_threshold(client, s.model_name, scored_world.champion_version)
    assert threshold is not None
    predictions = scoring.read_predictions(day(FIRST_SCORED), s)
    assert (predictions[CHAMPION_VERSION] == scored_world.champion_version).all()
    assert str(predictions[FLAGGED_CHAMPION].dtype) in ("bool", "boolean")
    assert (predictions[FLAGGED_CHAMPION] == (predictions[SCORE_CHAMPION] >= threshold)).all()
    assert 0 < predictions[FLAGGED_CHAMPION].sum() < len(predictions)


def test_a_champion_without_a_threshold_writes_null_flags_not_false(
    world_settings: Settings, scored_world: World
) -> None:
    from include.mlops import scoring

    s = world_settings
    client = registry.configure_mlflow(s)
    version = str(scored_world.champion_version)
    recorded = client.get_model_version(s.model_name, version).tags[registry.OPERATING_THRESHOLD_TAG]
    client.delete_model_version_tag(s.model_name, version, registry.OPERATING_THRESHOLD_TAG)
    try:
        # Day 1 is scored by no other test and read by none.
        result = scoring.score_day(day(1), s, rescore_with_current_champion=True)
        predictions = scoring.read_predictions(day(1), s)
    finally:
        client.set_model_version_tag(s.model_name, version, registry.OPERATING_THRESHOLD_TAG, recorded)
    assert result["operating_threshold"] is None and result["flagged"] is None
    assert predictions[FLAGGED_CHAMPION].isna().all() and predictions[SCORE_CHAMPION].notna().all()
