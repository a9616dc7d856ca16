"""Every Prometheus metric the platform exports: its name, labels, source and meaning.

Two sources, each computed from what the pipeline already records (no state of its own):

* ``lake``: the landed and quarantined drops, the feature snapshots, the drift verdicts (with
  the performance on labelled days), plus the policies' thresholds that the alerting rules
  compare against;
* ``registry``: the champion, the versions and their promotion decisions, the retrain requests.

Per-day metrics carry a ``day`` label (``YYYY-MM-DD``) for the last ``MLOPS_METRICS_RETENTION_DAYS``
days up to the newest day in the lake, so that the number of series stays bounded. Days are also
exported as timestamps (00:00 UTC), so that rules can compare them with ``time()``. Every metric is
a gauge: its value is the fact as recorded now.
"""

from __future__ import annotations

from dataclasses import dataclass

LAKE, REGISTRY = "lake", "registry"
SOURCES = (LAKE, REGISTRY)
"""The sources, each refreshed by the tasks that change its facts."""

PREFIX = "mlops_"


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric family."""

    name: str
    source: str
    labels: tuple[str, ...]
    help: str


@dataclass(frozen=True)
class Sample:
    """One value of a metric family, with its label values (in the family's label order)."""

    name: str
    labels: tuple[str, ...]
    value: float


def _spec(name: str, source: str, labels: tuple[str, ...], text: str) -> MetricSpec:
    return MetricSpec(PREFIX + name, source, labels, text)


_DAY = ("day",)

CATALOGUE: tuple[MetricSpec, ...] = (
    # The lake: drops
    _spec("rows_landed", LAKE, ("dataset", "day"), "Rows of a day's validated drop in the lake."),
    _spec(
        "drop_quarantined",
        LAKE,
        ("dataset", "day"),
        "1 when the day's last drop was rejected and quarantined.",
    ),
    _spec(
        "rows_quarantined",
        LAKE,
        ("dataset", "day"),
        "Rows of a quarantined drop, as validation counted them.",
    ),
    _spec(
        "validation_failed_expectations",
        LAKE,
        ("dataset", "day"),
        "Expectations the day's drop failed (0 for a landed day; unreadable files count one each).",
    ),
    _spec(
        "last_landed_day_timestamp_seconds",
        LAKE,
        ("dataset",),
        "00:00 UTC of the newest day landed in the lake.",
    ),
    _spec("quarantined_days", LAKE, ("dataset",), "Days whose last drop is quarantined, over the window."),
    # The lake: features and predictions
    _spec(
        "features_last_day_timestamp_seconds",
        LAKE,
        ("view",),
        "00:00 UTC of the newest day with a feature snapshot.",
    ),
    _spec("rows_scored", LAKE, _DAY, "Payments of the day scored by the champion."),
    # The lake: drift and performance, from each day's verdict
    _spec("drift_share", LAKE, _DAY, "Share of the key features that drifted on the day."),
    _spec("drifted_features", LAKE, _DAY, "Key features that drifted on the day."),
    _spec("drift_top_feature_psi", LAKE, ("day", "feature"), "PSI of the day's most drifted key feature."),
    _spec("prediction_psi", LAKE, _DAY, "PSI of the champion's score on the day against its reference."),
    _spec(
        "drift_signal",
        LAKE,
        ("day", "signal"),
        "1 for each drift signal the day raised (features, prediction, performance).",
    ),
    _spec("drift_retrain_requested", LAKE, _DAY, "1 when the day's check requested a retrain."),
    _spec("drift_check_seconds", LAKE, _DAY, "Seconds the day's drift check took."),
    _spec("drift_signal_days_in_a_row", LAKE, (), "Latest checked days in a row that raised a drift signal."),
    _spec("last_checked_day_timestamp_seconds", LAKE, (), "00:00 UTC of the newest day checked for drift."),
    _spec("retrain_requests", LAKE, (), "Drift checks that requested a retrain, over every recorded day."),
    _spec(
        "model_pr_auc",
        LAKE,
        ("day", "version"),
        "PR-AUC of the version on the fully labelled days measured at the day's check.",
    ),
    _spec(
        "model_recall_at_fpr",
        LAKE,
        ("day", "version", "fpr"),
        "Recall at the policy FPR of the version on the fully labelled days measured at the day's check.",
    ),
    _spec(
        "model_latest_pr_auc",
        LAKE,
        ("version",),
        "PR-AUC on labelled days at the newest check that measured it.",
    ),
    _spec(
        "model_latest_recall_at_fpr",
        LAKE,
        ("version", "fpr"),
        "Recall at the policy FPR on labelled days at the newest check that measured it.",
    ),
    # Policies the alerting rules compare against (settings, exported with the lake's facts)
    _spec("policy_min_pr_auc", LAKE, (), "Promotion floor on PR-AUC (MLOPS_PROMOTION_MIN_PR_AUC)."),
    _spec(
        "policy_min_recall_at_fpr",
        LAKE,
        (),
        "Promotion floor on recall at 1% FPR (MLOPS_PROMOTION_MIN_RECALL_AT_1PCT_FPR).",
    ),
    _spec(
        "policy_drift_share",
        LAKE,
        (),
        "Share of drifted key features that counts as drift (MLOPS_DRIFT_SHARE).",
    ),
    _spec(
        "policy_drop_deadline_hours",
        LAKE,
        (),
        "Hours after midnight UTC a day's drop is due (MLOPS_ALERT_DROP_DEADLINE_HOURS).",
    ),
    _spec("lake_facts_up", LAKE, (), "1 when the lake's facts were read, 0 when reading failed."),
    _spec("lake_facts_timestamp_seconds", LAKE, (), "When the lake's facts were read."),
    # The registry
    _spec("champion_version", REGISTRY, (), "Version the champion alias points at (absent: no champion)."),
    _spec("champion_registered_timestamp_seconds", REGISTRY, (), "When the champion version was registered."),
    _spec("champion_promoted_timestamp_seconds", REGISTRY, (), "When the champion alias last moved to it."),
    _spec(
        "champion_trained_through_timestamp_seconds",
        REGISTRY,
        (),
        "00:00 UTC of the champion's last training day.",
    ),
    _spec("champion_oot_pr_auc", REGISTRY, (), "The champion's PR-AUC on its out-of-time days at training."),
    _spec("model_versions", REGISTRY, (), "Versions of the registered model."),
    _spec("model_last_registered_timestamp_seconds", REGISTRY, (), "When the newest version was registered."),
    _spec(
        "promotion_decisions",
        REGISTRY,
        ("outcome",),
        "Versions by the gate's verdict (promoted, kept_champion, rejected, rejected_in_review, "
        "awaiting_approval).",
    ),
    _spec("rollbacks", REGISTRY, (), "Versions the champion was rolled back to by an operator."),
    _spec(
        "retrain_last_requested_timestamp_seconds", REGISTRY, (), "When the last drift retrain was requested."
    ),
    _spec(
        "retrain_pending",
        REGISTRY,
        (),
        "1 while the last drift retrain request has not triggered train_model.",
    ),
    _spec(
        "training_seconds",
        REGISTRY,
        ("version", "phase"),
        "Seconds the newest version's training spent per phase.",
    ),
    _spec("registry_facts_up", REGISTRY, (), "1 when the registry's facts were read, 0 when reading failed."),
    _spec("registry_facts_timestamp_seconds", REGISTRY, (), "When the registry's facts were read."),
)
"""Every metric family, in the order it is exported."""

BY_NAME = {spec.name: spec for spec in CATALOGUE}
"""The catalogue by metric name."""


def exported_names() -> set[str]:
    """The names of every exported metric (what rules and dashboards may name)."""
    return set(BY_NAME)


def sample(name: str, value: float, **labels: object) -> Sample:
    """A sample of metric ``name`` (its full name, or without the ``mlops_`` prefix)."""
    spec = BY_NAME.get(name) or BY_NAME[PREFIX + name]
    if set(labels) != set(spec.labels):
        raise ValueError(f"{spec.name} takes labels {spec.labels}, not {tuple(labels)}")
    return Sample(spec.name, tuple(str(labels[k]) for k in spec.labels), float(value))
