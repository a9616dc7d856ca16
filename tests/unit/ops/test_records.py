"""Operations read what other stages record under their names: the names must stay the same."""

from __future__ import annotations

from include.mlops import lake
from include.mlops.core.schema import DATASETS
from include.mlops.ingest.quarantine import REJECTION_NAME
from include.mlops.monitoring import outputs, policy, triggers
from include.mlops.ops import alerts, records, registry_metrics
from include.mlops.promotion import ROLLED_BACK
from include.mlops.promotion import policy as promotion_policy
from include.mlops.promotion import records as promotion_records


def test_the_file_names_are_the_writers_own() -> None:
    assert records.REJECTION_FILE == REJECTION_NAME
    assert records.VERDICT_FILE == outputs.VERDICT_NAME
    assert records.DRIFT_HTML == outputs.HTML_NAME
    assert set(records.LANDED_DATASETS) == set(DATASETS)
    assert all(lake.feature_snapshots(v).startswith("features/") for v in records.FEATURE_VIEWS)


def test_the_registry_tags_and_outcomes_are_promotion_and_monitoring_own() -> None:
    assert (*promotion_records.VERDICTS, promotion_policy.AWAITING_APPROVAL) == registry_metrics.GATE_OUTCOMES
    assert registry_metrics.GATE_TAG == promotion_records.GATE_TAG
    assert registry_metrics.ROLLBACK_DECISION == promotion_records.ROLLBACK
    assert registry_metrics.RETRAIN_REQUESTED_AT_TAG == triggers.TAG_AT
    assert registry_metrics.RETRAIN_TRIGGERED_TAG == triggers.TAG_TRIGGERED_RUN
    assert registry_metrics.RETRAIN_PENDING == triggers.PENDING
    assert (alerts.OUTCOME_PROMOTED, alerts.OUTCOME_KEPT, alerts.OUTCOME_REJECTED) == (
        promotion_policy.PROMOTED,
        promotion_policy.KEPT,
        promotion_policy.REJECTED,
    )
    assert alerts.OUTCOME_AWAITING == promotion_policy.AWAITING_APPROVAL
    assert alerts.OUTCOME_REJECTED_IN_REVIEW == promotion_policy.REJECTED_IN_REVIEW
    assert ROLLED_BACK == "rolled_back"


def test_the_suppressions_a_rerun_meets_are_the_monitor_own() -> None:
    assert set(alerts.RERUN_SUPPRESSIONS) == {policy.SUPPRESSED_SAME_DAY, policy.SUPPRESSED_LATER_DAY}
