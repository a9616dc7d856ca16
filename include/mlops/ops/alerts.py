"""The alerts the pipeline sends, as texts for the person on call: pure functions, unit-tested.

Each builder takes what a task recorded (a task's result, a quarantine's ``rejection.json``, a
drift check's verdict) and returns an :class:`Alert`, or ``None`` when there is nothing to say:
a quiet day sends no message. Every text says what happened, for which day or version, why,
what to do, and where the report is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

CRITICAL, WARNING, INFO = "critical", "warning", "info"
"""Severities: act now; look today; for the record."""

TASK_FAILED = "task_failed"
DROP_QUARANTINED = "drop_quarantined"
DROP_LATE = "drop_late"
DRIFT_RETRAIN = "drift_retrain_requested"
DRIFT_DETECTED = "drift_detected"
PROMOTED = "model_promoted"
REJECTED = "model_rejected"
KEPT = "champion_kept"
AWAITING_REVIEW = "model_awaiting_review"
ROLLED_BACK = "champion_rolled_back"
EVENTS = (
    TASK_FAILED,
    DROP_QUARANTINED,
    DROP_LATE,
    DRIFT_RETRAIN,
    DRIFT_DETECTED,
    PROMOTED,
    REJECTED,
    KEPT,
    AWAITING_REVIEW,
    ROLLED_BACK,
)
"""Every kind of alert (the ``event`` of an :class:`Alert`)."""

# Suppressions of a drift signal that only a rerun or a backfill meets: the day's first check
# already said it (``monitoring.policy.SUPPRESSED_SAME_DAY`` / ``SUPPRESSED_LATER_DAY``).
RERUN_SUPPRESSIONS = ("already_requested", "later_day_requested")

# Promotion outcomes (``promotion.policy``) as ``evaluate_and_promote`` and a concluded review return them.
OUTCOME_PROMOTED, OUTCOME_KEPT, OUTCOME_REJECTED = "promoted", "kept_champion", "rejected"
OUTCOME_AWAITING, OUTCOME_REJECTED_IN_REVIEW = "awaiting_approval", "rejected_in_review"


@dataclass(frozen=True)
class Alert:
    """One message to the person on call, with the facts it was made from."""

    event: str
    severity: str
    title: str
    what: str
    why: str
    todo: str
    day: str | None = None
    version: int | None = None
    links: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    @property
    def subject(self) -> str:
        """The e-mail subject: severity and title."""
        return f"[mlops {self.severity}] {self.title}"

    @property
    def text(self) -> str:
        """The whole message as plain text, the same in every channel."""
        lines = [
            self.subject,
            "",
            f"What happened: {self.what}",
            f"Why: {self.why}",
            f"What to do: {self.todo}",
        ]
        lines += [f"{name}: {url}" for name, url in self.links.items()]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """The alert as JSON-compatible values (a line of the alert log)."""
        return {**asdict(self), "text": self.text}


def _metric(metrics: dict[str, Any] | None, key: str) -> str:
    value = (metrics or {}).get(key)
    return "n/a" if value is None else f"{float(value):.3f}"


def _first_line(error: BaseException | str | None, limit: int = 500) -> str:
    if error is None:
        return "no error was recorded (the task was failed from outside, e.g. marked failed or timed out)"
    text = str(error).strip() or type(error).__name__
    head = text.splitlines()[0]
    name = type(error).__name__ if isinstance(error, BaseException) else ""
    shown = f"{name}: {head}" if name and not head.startswith(name) else head
    return shown[:limit] + (" ..." if len(shown) > limit or "\n" in text else "")


# --------------------------------------------------------------------------------------------------
# Failures and drops


def task_failed(
    dag_id: str,
    task_id: str,
    day: str | None,
    try_number: int | None,
    error: BaseException | str | None,
    links: dict[str, str] | None = None,
) -> Alert:
    """A task failed after its last retry (``on_failure_callback`` fires only then)."""
    tries = f" (try {try_number})" if try_number else ""
    for_day = f" for {day}" if day else ""
    return Alert(
        event=TASK_FAILED,
        severity=CRITICAL,
        title=f"{dag_id}.{task_id} failed{for_day}",
        what=f"task {task_id} of {dag_id} failed{for_day} after its last retry{tries}; "
        "the tasks after it in that run did not run.",
        why=_first_line(error),
        todo="read the task log (link below), fix the cause, then clear the task in Airflow to rerun it: "
        "every task is idempotent, a rerun replaces what the failed try may have left.",
        day=day,
        links=dict(links or {}),
        facts={"dag_id": dag_id, "task_id": task_id, "try_number": try_number},
    )


def drop_quarantined(
    dataset: str,
    day: str,
    rejection: dict[str, Any],
    problems: tuple[str, ...] | list[str] = (),
    links: dict[str, str] | None = None,
) -> Alert:
    """A day's drop failed validation (or could not be read) and was quarantined.

    ``rejection`` is the quarantine's ``rejection.json``; ``problems`` the operator's lines
    (``DropRejected.problems``), else they are read from the rejection's message.
    """
    failures = rejection.get("failures") or []
    lines = list(problems) or [
        line.strip()[2:] for line in str(rejection.get("message", "")).splitlines() if line.startswith("  - ")
    ]
    failed = [f"{f.get('expectation')}({f.get('column') or ''})" for f in failures]
    count = f"{len(failures)} failed expectation{'s' if len(failures) != 1 else ''}" if failures else None
    headline = count or ("unreadable files" if rejection.get("reason") == "unreadable" else "rejected")
    landing = rejection.get("landing_url") or "the landing zone"
    return Alert(
        event=DROP_QUARANTINED,
        severity=WARNING,
        title=f"{dataset} drop of {day} quarantined: {headline}",
        what=f"the {dataset} drop of {day} was rejected and quarantined; none of it reached the lake, "
        f"the features or a model. {rejection.get('lake') or ''}".strip(),
        why="; ".join(lines) or headline,
        todo=f"fix the drop in {landing} (data files first, _SUCCESS last), then clear validate_and_land "
        f"of ingest_{dataset} for {day}. The other days go on meanwhile.",
        day=day,
        links=dict(links or {}),
        facts={"dataset": dataset, "failed_expectations": failed, "reason": rejection.get("reason")},
    )


def drop_late(
    dataset: str, day: str, deadline: str, marker_url: str, links: dict[str, str] | None = None
) -> Alert:
    """A day's drop has not landed by its deadline (the sensor keeps waiting)."""
    return Alert(
        event=DROP_LATE,
        severity=CRITICAL,
        title=f"{dataset} drop of {day} has not landed by {deadline}",
        what=f"the {dataset} drop of {day} was due by {deadline} and its marker {marker_url} is not there "
        "yet; the landing sensor keeps waiting, and that day's features, scores and drift check wait "
        "with it.",
        why="the producer has not finished the drop (it writes _SUCCESS after the data files).",
        todo="ask the producer of the drop; once _SUCCESS lands the run continues by itself. If the day "
        "will never come, mark the run failed in Airflow so that later days are not held up.",
        day=day,
        links=dict(links or {}),
        facts={"dataset": dataset, "marker": marker_url, "deadline": deadline},
    )


# --------------------------------------------------------------------------------------------------
# Drift


def drift_checked(verdict: dict[str, Any], links: dict[str, str] | None = None) -> Alert | None:
    """The drift check of a day, when it found drift: a retrain request, or drift held by the cooldown.

    ``None`` on a quiet day, for a reissued request (its first check already sent it) and for the
    suppressions that only reruns and backfills meet.
    """
    signals = list(verdict.get("signals") or [])
    if not signals or verdict.get("reissue") or verdict.get("suppressed_by") in RERUN_SUPPRESSIONS:
        return None
    day, version = verdict.get("day"), verdict.get("model_version")
    drifted = verdict.get("drifted_columns") or {}
    facts = {
        "signals": signals,
        "drift_share": verdict.get("drift_share"),
        "drifted_columns": drifted,
        "prediction_psi": verdict.get("prediction_psi"),
    }
    if verdict.get("retrain"):
        run = verdict.get("train_run_id") or "a drift run"
        return Alert(
            event=DRIFT_RETRAIN,
            severity=WARNING,
            title=f"drift on {day}: retrain requested ({', '.join(signals)})",
            what=f"the drift check of {day} (scored by model version {version}) found drift that calls "
            f"for retraining; train_model was asked to run as {run}.",
            why=str(verdict.get("reason") or verdict.get("explanation")),
            todo=f"nothing unless it fails: watch train_model run {run} and the promotion decision that "
            "follows (an alert comes either way). Further drift retrains wait for the cooldown.",
            day=day,
            version=version,
            links=dict(links or {}),
            facts={**facts, "train_run_id": verdict.get("train_run_id")},
        )
    return Alert(
        event=DRIFT_DETECTED,
        severity=INFO,
        title=f"drift on {day}: no retrain ({verdict.get('suppressed_by')})",
        what=f"the drift check of {day} (scored by model version {version}) found drift, but no retrain "
        "was requested.",
        why=str(verdict.get("explanation") or verdict.get("reason")),
        todo="nothing now: the requested retrain is running or the cooldown holds. If the drift persists "
        "the monitor asks again after the cooldown; to retrain at once, trigger train_model with a reason.",
        day=day,
        version=version,
        links=dict(links or {}),
        facts={**facts, "suppressed_by": verdict.get("suppressed_by")},
    )


# --------------------------------------------------------------------------------------------------
# Promotion and rollback


def promotion_decided(
    result: dict[str, Any], run_reason: str | None = None, links: dict[str, str] | None = None
) -> Alert | None:
    """The promotion step's verdict on a trained version (``evaluate_and_promote``'s result, or a
    concluded review's, which has the same form).

    A promotion, a rejection (by the gate or a reviewer) and a verdict awaiting review always
    alert; a champion kept against a sound challenger alerts only for a run that had a reason of
    its own (a drift retrain, a manual run), not the nightly schedule; a rerun of a recorded
    promotion (``already_champion``) is quiet.
    """
    outcome = result.get("outcome")
    version, before = result.get("challenger_version"), result.get("champion_before")
    common = _decision_fields(result, run_reason, links)
    if outcome == OUTCOME_PROMOTED:
        return _promoted(version, before, common)
    if outcome == OUTCOME_AWAITING:
        return Alert(
            event=AWAITING_REVIEW,
            severity=INFO,
            title=f"model version {version} passed the gate and awaits a reviewer's approval",
            what=f"version {version} would replace champion {before}; the alias moves only once a "
            "reviewer approves it.",
            todo="open the review task of this train_model run in Airflow (Required actions) and approve "
            "or reject it; unanswered by its timeout, it is rejected.",
            **common,
        )
    if outcome in (OUTCOME_REJECTED, OUTCOME_REJECTED_IN_REVIEW):
        return _rejected(version, before, outcome == OUTCOME_REJECTED_IN_REVIEW, common)
    nightly = not run_reason or run_reason.strip().lower() == "nightly schedule"
    if outcome == OUTCOME_KEPT and not nightly:
        return Alert(
            event=KEPT,
            severity=INFO,
            title=f"model version {version} did not beat champion {before}",
            what=f"version {version}, trained for: {run_reason}, is sound but not better than champion "
            f"{before}, which keeps serving.",
            todo="nothing, unless the drift goes on hurting the champion: then look at the labelled days "
            "the retrain had, and retrain once more of them carry the new world.",
            **common,
        )
    return None


def _decision_fields(
    result: dict[str, Any], run_reason: str | None, links: dict[str, str] | None
) -> dict[str, Any]:
    """The ``why``, version, links and facts every promotion alert shares."""
    version, before = result.get("challenger_version"), result.get("champion_before")
    new, old = result.get("challenger_metrics") or {}, result.get("champion_metrics") or {}
    scores = f"PR-AUC {_metric(new, 'pr_auc')}, recall at 1% FPR {_metric(new, 'recall_at_1pct_fpr')}"
    if before is not None:
        scores += f"; champion {before}: PR-AUC {_metric(old, 'pr_auc')}"
        scores += f", recall {_metric(old, 'recall_at_1pct_fpr')}"
    return {
        "why": f"{result.get('reason') or 'no reason recorded'} ({scores})",
        "version": version,
        "links": dict(links or {}),
        "facts": {
            "outcome": result.get("outcome"),
            "champion_before": before,
            "champion_after": result.get("champion_after"),
            "challenger_metrics": new,
            "champion_metrics": old,
            "run_reason": run_reason,
        },
    }


def _rejected(version: int | None, before: int | None, in_review: bool, common: dict[str, Any]) -> Alert:
    by = "a reviewer" if in_review else "the promotion gate's checks or floors"
    return Alert(
        event=REJECTED,
        severity=WARNING,
        title=f"model version {version} rejected: champion {before} keeps serving",
        what=f"version {version} was rejected by {by} and will not serve; champion {before} keeps serving.",
        todo="open the version's evaluation in MLflow (link below). A drifted world with too few labelled "
        "days after the change is the usual cause: the next retrain, with more labelled days, is judged "
        "again.",
        **common,
    )


def _promoted(version: int | None, before: int | None, common: dict[str, Any]) -> Alert:
    replaced = f" in place of version {before}" if before is not None else " (the first champion)"
    undo = (
        f"To undo it, trigger train_model with rollback_to={before} and a reason."
        if before is not None
        else "There is no earlier champion to roll back to."
    )
    return Alert(
        event=PROMOTED,
        severity=INFO,
        title=f"model version {version} promoted to champion{replaced}",
        what=f"version {version} now serves as champion{replaced}; scoring uses it from the next run.",
        todo=f"nothing. {undo}",
        **common,
    )


def rolled_back(result: dict[str, Any], links: dict[str, str] | None = None) -> Alert | None:
    """An operator's rollback of the champion (``rollback``'s result); ``None`` when nothing moved."""
    if result.get("outcome") != "rolled_back":
        return None
    version, before = result.get("champion_after"), result.get("champion_before")
    return Alert(
        event=ROLLED_BACK,
        severity=WARNING,
        title=f"champion rolled back to version {version} (from {before})",
        what=f"champion now points at version {version} again, in place of version {before}; scoring uses "
        "it from the next run.",
        why=str(result.get("reason") or "no reason recorded"),
        todo=f"make sure the cause is being fixed: the next nightly or drift retrain is judged against "
        f"version {version}. Version {before} stays in the registry.",
        version=version,
        links=dict(links or {}),
        facts={"champion_before": before, "champion_after": version},
    )
