"""A reviewer's approval before ``champion`` moves (``MLOPS_PROMOTION_APPROVAL=required``).

With approval required, ``train_model`` judges the challenger as usual
(:func:`~.promote.evaluate_and_promote_run` with ``review=True``). A challenger the gate would
promote is recorded ``decision=awaiting_approval`` (pending, no alias moved) with its evaluation
report, and an Airflow human-in-the-loop task (``review``) shows the reviewer
:func:`review_body`: the metrics, the failing or passing slices, the fairness audit and a link to
the MLflow run. The reviewer chooses :data:`APPROVE` or :data:`REJECT` and may leave a
:data:`COMMENT`; a review not answered within ``MLOPS_PROMOTION_APPROVAL_TIMEOUT_HOURS`` takes the
default, :data:`REJECT`, with no reviewer.

:func:`conclude_review` applies the answer under the model's lock, recorded like any decision
(:func:`~.records.commit_and_record`): approved, the alias moves (``decision=promoted``);
rejected or timed out, ``decision=rejected_in_review`` (serving it later needs a forced
rollback). If the champion moved while the review was pending, an approval answered another
comparison: the champion is kept and the decision says why (a rejection stays a rejection). The
version records the review in ``review_outcome`` (``approved``, ``rejected``, ``timed_out``),
``reviewed_by``, ``review_comment`` and ``reviewed_at``; the report keeps the gate's request
(``review_request``) beside the final decision. A retry converges; a rerun of a concluded review
changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops import registry
from include.mlops.core.policies import PromotionPolicy
from include.mlops.core.settings import resolve_settings
from include.mlops.promotion.evaluation import PromotionError, run_of, version_for_run
from include.mlops.promotion.fairness import fairness_summary
from include.mlops.promotion.policy import (
    AWAITING_APPROVAL,
    KEPT,
    PROMOTED,
    REJECTED_IN_REVIEW,
    Decision,
)
from include.mlops.promotion.records import (
    VERDICTS,
    commit_and_record,
    intent_of,
    promotion_lock,
    read_report,
)
from include.mlops.promotion.slices import slices_summary

if TYPE_CHECKING:
    from include.mlops.core.settings import Settings

logger = logging.getLogger(__name__)

APPROVE, REJECT = "Approve", "Reject"
"""The reviewer's options (the ``review`` task's); :data:`REJECT` is taken on a time-out."""
COMMENT = "comment"
"""The review form's field for the reviewer's comment."""
_CONCLUDABLE = (AWAITING_APPROVAL, PROMOTED, KEPT, REJECTED_IN_REVIEW)


@dataclass(frozen=True)
class Review:
    """A reviewer's answer: approved or not, whether it timed out, who, their comment, when."""

    approved: bool
    timed_out: bool
    reviewer: str | None
    comment: str
    at: str

    @property
    def outcome(self) -> str:
        """``approved``, ``rejected`` or ``timed_out``."""
        return "timed_out" if self.timed_out else "approved" if self.approved else "rejected"

    def reason(self, timeout_hours: float) -> str:
        """The review as a reason of the decision."""
        said = f": {self.comment}" if self.comment else ""
        if self.timed_out:
            return f"no review within {timeout_hours:g} h: rejected at {self.at}"
        verb = "approved" if self.approved else "rejected in review"
        return f"{verb} by {self.reviewer} at {self.at}{said}"

    def tags(self) -> dict[str, str]:
        """The version's review tags."""
        return {
            "review_outcome": self.outcome,
            "reviewed_by": self.reviewer or "nobody (timed out)",
            "review_comment": self.comment,
            "reviewed_at": self.at,
        }

    def as_dict(self) -> dict[str, Any]:
        """The review as JSON-compatible values."""
        return {**dataclasses.asdict(self), "outcome": self.outcome}


def review_of(response: dict[str, Any]) -> Review:
    """The answer of the ``review`` task (its result: ``chosen_options``, ``params_input``,
    ``responded_by_user``, ``responded_at``); no user means the review timed out."""
    chosen = list(response.get("chosen_options") or [])
    user = response.get("responded_by_user")
    when = response.get("responded_at")
    at = when.isoformat(timespec="seconds") if isinstance(when, dt.datetime) else str(when or "")
    comment = str((response.get("params_input") or {}).get(COMMENT) or "").strip()
    reviewer = None if not user else str(user.get("name") or user.get("id"))
    return Review(
        approved=bool(user) and chosen == [APPROVE],
        timed_out=not user,
        reviewer=reviewer,
        comment=comment,
        at=at,
    )


def _final(requested: Decision, review: Review, before: int | None, current: int | None, version: int,
           timeout_hours: float) -> Decision:  # fmt: skip
    """The decision the review makes of the gate's request, given where ``champion`` is now."""
    said = review.reason(timeout_hours)
    if current == version or (current == before and review.approved):
        # Approved (or its alias move already committed by an earlier attempt).
        return dataclasses.replace(
            requested, promote=True, outcome=PROMOTED, reasons=(*requested.reasons, said)
        )
    if not review.approved:
        return dataclasses.replace(
            requested, promote=False, outcome=REJECTED_IN_REVIEW, reasons=(said, *requested.reasons)
        )
    # Approved, but the champion moved meanwhile: the approval answered another comparison.
    moved = (
        f"the champion moved from version {before} to {current} while the review was pending; "
        f"the review answered a comparison with version {before}: retrain to judge against {current}"
    )
    return dataclasses.replace(requested, promote=False, outcome=KEPT, reasons=(moved, said))


def conclude_review(airflow_run_id: str, response: dict[str, Any], settings: Settings | None = None) -> dict:
    """Apply the reviewer's answer ``response`` to the version registered by ``airflow_run_id``.

    Returns the result of :func:`~.promote.evaluate_and_promote_run` (the final outcome) with
    ``review`` (:meth:`Review.as_dict`). Raises :class:`~.evaluation.PromotionError` when the
    version awaits no review.
    """
    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    policy = PromotionPolicy.from_env(seed=s.seed)
    version = version_for_run(airflow_run_id, s)
    review = review_of(response)
    with promotion_lock(s, policy.lock_timeout) as lock:
        tags = client.get_model_version(s.model_name, str(version)).tags
        intent = intent_of(tags)
        _, run_id = run_of(client, s.model_name, version)
        if intent.decision in VERDICTS and not intent.pending and tags.get("review_outcome"):
            logger.info("the review of version %s was concluded already: %s", version, intent.decision)
            report = read_report(client, run_id, str(intent.at))
            return _result(client, s.model_name, version, report, review)
        if intent.decision not in _CONCLUDABLE or not intent.pending or not intent.at or not run_id:
            raise PromotionError(
                f"version {version} of {s.model_name} awaits no review (decision={intent.decision}, "
                f"{tags.get('decision_status')}): nothing to approve or reject"
            )
        report = read_report(client, run_id, intent.at)
        requested = Decision.from_dict(report.get("review_request") or report["decision"])
        before = report["champion_version_before"]
        current = registry.alias_version(client, s.model_name, registry.CHAMPION)
        final = _final(requested, review, before, current, version, policy.approval_timeout_hours)
        report = {
            **report,
            "review_request": requested.as_dict(),
            "decision": final.as_dict(),
            "review": review.as_dict(),
            "review_lock": lock,
        }
        commit_and_record(client, s.model_name, version, final, report, extra_tags=review.tags())
    logger.info("%s version %s after review: %s (%s)", s.model_name, version, final.outcome, final.reason)
    return _result(client, s.model_name, version, report, review)


def _result(client: Any, name: str, version: int, report: dict[str, Any], review: Review) -> dict[str, Any]:
    """The concluded decision as :func:`~.promote.evaluate_and_promote_run` reports one, with the review."""
    decision = Decision.from_dict(report["decision"])
    experiment_id, run_id = run_of(client, name, version)
    before = report["champion_version_before"]
    recorded = report.get("review") or review.as_dict()
    return {
        "model": name,
        "challenger_version": version,
        "champion_before": before,
        "champion_after": version if decision.promote else before,
        "outcome": decision.outcome,
        "promoted": decision.promote,
        "reason": decision.reason,
        "challenger_metrics": decision.challenger_metrics,
        "champion_metrics": decision.champion_metrics,
        "slices": slices_summary(list(decision.slices), report.get("slice_dimensions_unavailable", [])),
        "fairness": fairness_summary(decision.fairness),
        "operating_threshold": registry.operating_threshold(client, name, version),
        "awaiting_review": False,
        "experiment_id": experiment_id,
        "run_id": run_id,
        "seconds": None,
        "summary": None,
        "review": recorded,
    }


def review_body(result: dict[str, Any], link: str | None, timeout_hours: float) -> str:
    """What the reviewer reads in the ``review`` task: the gate's summary, the run's link, the choice."""
    parts = [
        f"The promotion gate would promote **{result['model']} version {result['challenger_version']}** "
        + (
            f"over champion version {result['champion_before']}."
            if result["champion_before"] is not None
            else "(no champion yet)."
        ),
        "",
        result.get("summary") or f"Reasons: {result['reason']}",
        "",
        f"[Open the challenger's MLflow run]({link}): curves, calibration, bootstrap, slice and "
        "fairness tables under `evaluation/`."
        if link
        else "The MLflow run's `evaluation/` folder "
        "holds the curves, calibration, bootstrap, slice and fairness tables.",
        "",
        f"**{APPROVE}** moves `champion` to it; **{REJECT}** records the rejection with your comment. "
        f"Without an answer within {timeout_hours:g} h it is rejected.",
    ]
    return "\n".join(parts)
