"""What promotion, review and rollback write in MLflow, and how a retry reads it back.

A decision is recorded in a fixed order so that a retry after a failure at any call converges:
its tags on the version with ``decision_status=pending`` (:func:`decision_tags`), the alias moves
(:func:`move_champion`: the single point of commit), the registered model's ``last_decision``
(and ``last_promotion``), the report artifact in the challenger's run
(:func:`report_artifact`), then ``decision_status=recorded``. :func:`commit_and_record` is that
sequence; :class:`Intent` is what a version's tags say about the last decision on it.

The lock (:func:`promotion_lock`) serialises every decision on one registered model.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops import registry
from include.mlops.core.policies import PromotionPolicy
from include.mlops.promotion.policy import AWAITING_APPROVAL, KEPT, PROMOTED, REJECTED, REJECTED_IN_REVIEW
from include.mlops.promotion.slices import SLICE_FAIL, SLICE_PASS, SLICE_TOO_SMALL

if TYPE_CHECKING:
    from collections.abc import Iterator

    from include.mlops.core.settings import Settings
    from include.mlops.promotion.policy import Decision

ROLLBACK = "rollback"
"""The ``decision`` tag of a version an operator rolled back to."""
STATUS_TAG, PENDING, RECORDED = "decision_status", "pending", "recorded"
"""The tag that says whether the last decision on a version was recorded in full, and its values."""
GATE_TAG = "gate_decision"
"""The gate's verdict, kept when a rollback overwrites ``decision``."""
VERDICTS = (PROMOTED, KEPT, REJECTED, REJECTED_IN_REVIEW)
"""The final verdicts a promotion records (a reviewer's rejection included)."""
REFUSED = (REJECTED, REJECTED_IN_REVIEW)
"""Verdicts after which serving the version needs a forced rollback."""


@contextlib.contextmanager
def promotion_lock(settings: Settings | None = None, timeout: float | None = None) -> Iterator[str]:
    """The model's lock (:func:`include.mlops.registry.model_lock`) for promotions and rollbacks.

    ``timeout`` defaults to the policy's ``lock_timeout`` (``MLOPS_PROMOTION_LOCK_TIMEOUT``).
    Yields the lock's description; raises :class:`~include.mlops.registry.LockTimeout`.
    """
    if timeout is None:
        timeout = PromotionPolicy.from_env().lock_timeout
    with registry.model_lock(timeout, settings) as held:
        yield held


def move_champion(client: Any, name: str, version: int, current: int | None) -> None:
    """``previous_champion`` to the version replaced, then ``champion`` to ``version``: the commit."""
    if current is not None and current != version:
        registry.move_alias(client, name, registry.PREVIOUS_CHAMPION, current)
    registry.move_alias(client, name, registry.CHAMPION, version)


def version_or_none(text: str | None) -> int | None:
    """A version number recorded as a tag (``none`` / ``None`` / absent: no version)."""
    return int(text) if text and text.isdigit() else None


@dataclass(frozen=True)
class Intent:
    """What a version's tags record about the last decision on it, and whether it was finished."""

    decision: str | None
    pending: bool
    replaced: int | None
    at: str | None
    reason: str
    gate: str | None

    def unfinished(self, decisions: tuple[str, ...], replaced: int | None) -> bool:
        """Whether this is an unfinished decision of ``decisions`` that replaces ``replaced``."""
        return self.pending and self.decision in decisions and self.replaced == replaced and bool(self.at)


def intent_of(tags: dict[str, str]) -> Intent:
    """The decision recorded by a version's tags: a gate verdict, a pending review or a rollback."""
    decision = tags.get("decision")
    rolled = decision == ROLLBACK
    return Intent(
        decision=decision,
        pending=tags.get(STATUS_TAG) == PENDING,
        replaced=version_or_none(tags.get("rolled_back_from" if rolled else "compared_with")),
        at=tags.get("rolled_back_at" if rolled else "decided_at"),
        reason=tags.get("rollback_reason" if rolled else "decision_reason", ""),
        gate=tags.get(GATE_TAG) if rolled else decision if decision in VERDICTS else None,
    )


def read_intent(client: Any, name: str, version: int) -> Intent:
    """The decision recorded on ``version``, read from the registry."""
    return intent_of(client.get_model_version(name, str(version)).tags)


def report_artifact(at: str) -> str:
    """The run artifact of the evaluation report of the decision taken at ``at``."""
    return f"promotion/evaluation-{at.replace(':', '').replace('+', 'Z')}.json"


def read_report(client: Any, run_id: str, at: str) -> dict[str, Any]:
    """The evaluation report of the decision taken at ``at``, read back from the run."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="mlops-report-") as folder:
        path = client.download_artifacts(run_id, report_artifact(at), folder)
        return json.loads(Path(path).read_text())


def _gate_tags(decision: Decision) -> dict[str, str]:
    """Short tags of the slices and the fairness audit (the full tables are artifacts)."""
    tags: dict[str, str] = {}
    if decision.slices:
        judged = [r for r in decision.slices if r["status"] in (SLICE_PASS, SLICE_FAIL)]
        failing = [r["slice"] for r in judged if r["status"] == SLICE_FAIL]
        tags["gate_slices"] = (
            f"{len(judged)} judged, {len(failing)} failing"
            + (f" ({', '.join(failing)})" if failing else "")
            + f", {sum(r['status'] == SLICE_TOO_SMALL for r in decision.slices)} too small"
        )
    if decision.fairness:
        mine, theirs = decision.fairness.get(registry.CHALLENGER), decision.fairness.get(registry.CHAMPION)
        if mine is None:
            tags["gate_fairness"] = f"not audited: {decision.fairness.get('skipped')}"
        else:
            tags["gate_fairness"] = json.dumps(
                {
                    "fpr_disparity": mine.get("fpr_disparity"),
                    "recall_disparity": mine.get("recall_disparity"),
                    "champion_fpr_disparity": (theirs or {}).get("fpr_disparity"),
                    "champion_recall_disparity": (theirs or {}).get("recall_disparity"),
                    "bound": decision.fairness.get("max_disparity"),
                }
            )
    return tags


def decision_tags(decision: Decision, rows: int, at: str, before: int | None) -> dict[str, Any]:
    """The tags of the challenger version: the outcome (pending), its reason, both models' metrics and
    the gate's short verdicts on slices and fairness."""
    tags: dict[str, Any] = {
        "decision": decision.outcome,
        STATUS_TAG: PENDING,
        "decision_reason": decision.reason,
        "decided_at": at,
        "compared_with": before if before is not None else "none",
        "evaluation_rows": rows,
    }
    for prefix, metrics in (
        (registry.CHALLENGER, decision.challenger_metrics),
        (registry.CHAMPION, decision.champion_metrics),
    ):
        for key, value in (metrics or {}).items():
            tags[f"{prefix}_{key}"] = f"{value:.6f}"
    if "delta_pr_auc" in decision.comparison:
        tags["delta_pr_auc"] = f"{decision.comparison['delta_pr_auc']:+.6f}"
    boot = decision.comparison.get("bootstrap")
    if boot:
        tags["delta_pr_auc_interval"] = json.dumps([round(v, 6) for v in boot["delta_pr_auc_interval"]])
    return {**tags, **_gate_tags(decision)}


def decision_summary(
    decision: Decision, version: int, before: int | None, after: int | None, at: str
) -> dict:
    """The registered model's ``last_decision``: what was decided on which version, and why."""
    return {
        "action": "promotion",
        "version": version,
        "outcome": decision.outcome,
        "champion_before": before,
        "champion_after": after,
        "reason": decision.reason[:1000],
        "at": at,
        "challenger_metrics": {k: round(v, 6) for k, v in decision.challenger_metrics.items()},
        "champion_metrics": {k: round(v, 6) for k, v in (decision.champion_metrics or {}).items()},
    }


def commit_and_record(
    client: Any,
    name: str,
    version: int,
    decision: Decision,
    report: dict[str, Any],
    extra_tags: dict[str, Any] | None = None,
) -> None:
    """The decision on ``version`` (pending, with ``extra_tags``), the alias moves when promoted, the
    model's tags and the report, then the decision marked recorded (:data:`RECORDED`; a decision
    awaiting a review stays :data:`PENDING`). Every step can be replayed with the same values."""
    at, before = report["decided_at"], report["champion_version_before"]
    tags = {**decision_tags(decision, report["rows"], at, before), **(extra_tags or {})}
    registry.set_version_tags(client, name, version, tags)
    after = before
    if decision.promote:
        move_champion(client, name, version, before)
        after = version
    summary = decision_summary(decision, version, before, after, at)
    client.set_registered_model_tag(name, "last_decision", registry.cut(json.dumps(summary)))
    if decision.promote:
        client.set_registered_model_tag(name, "last_promotion", registry.cut(json.dumps(summary)))
    run_id = client.get_model_version(name, str(version)).run_id
    if run_id:
        client.log_dict(run_id, report, report_artifact(at))
    if decision.outcome != AWAITING_APPROVAL:
        registry.set_version_tags(client, name, version, {STATUS_TAG: RECORDED})
