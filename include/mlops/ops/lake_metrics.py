"""The lake's facts as metric samples: drops, quarantines, features, scores, drift and performance.

Read from what the stages wrote (:mod:`.records`): lake partitions (parquet footers only), the
quarantine's ``rejection.json`` and the drift checks' ``verdict.json``. Per-day samples cover the
retention window up to the newest day found.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops import lake
from include.mlops.core.alerting import OpsSettings
from include.mlops.core.metrics import TARGET_FPR
from include.mlops.core.policies import DriftPolicy, PromotionPolicy
from include.mlops.core.settings import resolve_settings
from include.mlops.ops import records
from include.mlops.ops.catalogue import Sample, sample

if TYPE_CHECKING:
    from include.mlops.core.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LakeFacts:
    """What the lake holds, read once: days per dataset, quarantines, verdicts."""

    landed: dict[str, list[dt.date]]
    quarantined: dict[str, dict[dt.date, dict[str, Any]]]
    scored: list[dt.date]
    features: dict[str, list[dt.date]]
    verdicts: dict[dt.date, dict[str, Any]]

    @property
    def newest_day(self) -> dt.date | None:
        """The newest day anything was recorded for."""
        days = [d for ds in self.landed.values() for d in ds] + [
            d for q in self.quarantined.values() for d in q
        ]
        days += [*self.scored, *self.verdicts]
        return max(days) if days else None


def read_lake_facts(settings: Settings | None = None) -> LakeFacts:
    """Read the lake's facts (listings and small JSON files; no data file is read)."""
    s = resolve_settings(settings)
    return LakeFacts(
        landed={d: records.landed_days(d, s) for d in records.LANDED_DATASETS},
        quarantined={d: records.rejections(d, s) for d in records.LANDED_DATASETS},
        scored=records.landed_days(lake.PREDICTIONS, s),
        features={v: records.landed_days(lake.feature_snapshots(v), s) for v in records.FEATURE_VIEWS},
        verdicts=records.verdicts(s),
    )


def window(newest: dt.date | None, days: int) -> tuple[dt.date, dt.date] | None:
    """The first and last day per-day metrics cover: ``days`` days up to ``newest``."""
    if newest is None:
        return None
    return newest - dt.timedelta(days=days - 1), newest


def lake_samples(
    settings: Settings | None = None, ops: OpsSettings | None = None, now: float | None = None
) -> list[Sample]:
    """Every sample of the ``lake`` source; ``mlops_lake_facts_up`` is 0 (with a warning) when the
    lake cannot be read."""
    s = resolve_settings(settings)
    ops = ops or OpsSettings.from_env()
    found = [
        *policy_samples(ops),
        sample("lake_facts_timestamp_seconds", time.time() if now is None else now),
    ]
    try:
        facts = read_lake_facts(s)
        span = window(facts.newest_day, ops.metrics_retention_days)
        found += drop_samples(facts, span, s)
        found += drift_samples(facts, span)
        found += performance_samples(facts, span)
    except Exception as exc:
        logger.warning("the lake's facts could not be read: %s: %s", type(exc).__name__, exc)
        return [*found, sample("lake_facts_up", 0)]
    return [*found, sample("lake_facts_up", 1)]


def policy_samples(ops: OpsSettings) -> list[Sample]:
    """The thresholds the alerting rules compare against, from the policies' settings."""
    promotion, drift = PromotionPolicy.from_env(), DriftPolicy.from_env()
    return [
        sample("policy_min_pr_auc", promotion.min_pr_auc),
        sample("policy_min_recall_at_fpr", promotion.min_recall_at_1pct_fpr),
        sample("policy_drift_share", drift.drift_share),
        sample("policy_drop_deadline_hours", ops.drop_deadline_hours),
    ]


def _inside(day: dt.date, span: tuple[dt.date, dt.date] | None) -> bool:
    return span is not None and span[0] <= day <= span[1]


def drop_samples(facts: LakeFacts, span: tuple[dt.date, dt.date] | None, s: Settings) -> list[Sample]:
    """Landed and quarantined drops per dataset and day, the newest landed day, feature freshness."""
    found: list[Sample] = []
    for dataset in records.LANDED_DATASETS:
        landed, quarantined = facts.landed[dataset], facts.quarantined[dataset]
        if landed:
            found.append(
                sample("last_landed_day_timestamp_seconds", records.day_start(landed[-1]), dataset=dataset)
            )
        for day in sorted({*landed, *quarantined}):
            if not _inside(day, span):
                continue
            labels = {"dataset": dataset, "day": day.isoformat()}
            rejection = quarantined.get(day)
            rows = records.landed_rows(dataset, day, s) if day in landed else None
            if rows is not None:
                found.append(sample("rows_landed", rows, **labels))
            found.append(sample("drop_quarantined", 1 if rejection is not None else 0, **labels))
            failed = records.failed_expectations(rejection) if rejection is not None else 0
            found.append(sample("validation_failed_expectations", failed, **labels))
            bad_rows = records.rejected_rows(rejection) if rejection is not None else None
            if bad_rows is not None:
                found.append(sample("rows_quarantined", bad_rows, **labels))
        in_window = sum(1 for day in quarantined if _inside(day, span))
        found.append(sample("quarantined_days", in_window, dataset=dataset))
    for view, days in facts.features.items():
        if days:
            found.append(
                sample("features_last_day_timestamp_seconds", records.day_start(days[-1]), view=view)
            )
    for day in facts.scored:
        rows = records.landed_rows(lake.PREDICTIONS, day, s) if _inside(day, span) else None
        if rows is not None:
            found.append(sample("rows_scored", rows, day=day.isoformat()))
    return found


def _top_feature(verdict: dict[str, Any]) -> tuple[str, float] | None:
    """The key feature with the highest PSI in a verdict (all judged columns, else the drifted ones)."""
    columns = (verdict.get("drift") or {}).get("columns") or []
    scored = {c.get("column"): c.get("score") for c in columns if isinstance(c, dict)}
    scored = scored or dict(verdict.get("drifted_columns") or {})
    known = [(name, float(v)) for name, v in scored.items() if isinstance(v, int | float)]
    return max(known, key=lambda item: item[1]) if known else None


def drift_samples(facts: LakeFacts, span: tuple[dt.date, dt.date] | None) -> list[Sample]:
    """Each checked day's drift, the retrain requests and how many days in a row drifted."""
    found: list[Sample] = []
    for day, verdict in sorted(facts.verdicts.items()):
        if not _inside(day, span):
            continue
        label = day.isoformat()
        found.append(sample("drift_share", verdict.get("drift_share") or 0.0, day=label))
        found.append(sample("drifted_features", len(verdict.get("drifted_columns") or {}), day=label))
        top = _top_feature(verdict)
        if top is not None:
            found.append(sample("drift_top_feature_psi", top[1], day=label, feature=top[0]))
        if isinstance(verdict.get("prediction_psi"), int | float):
            found.append(sample("prediction_psi", verdict["prediction_psi"], day=label))
        for signal in verdict.get("signals") or []:
            found.append(sample("drift_signal", 1, day=label, signal=signal))
        requested = bool(verdict.get("retrain")) and not verdict.get("reissue")
        found.append(sample("drift_retrain_requested", 1 if requested else 0, day=label))
        if isinstance(verdict.get("seconds"), int | float):
            found.append(sample("drift_check_seconds", verdict["seconds"], day=label))
    if facts.verdicts:
        found.append(sample("last_checked_day_timestamp_seconds", records.day_start(max(facts.verdicts))))
    requests = sum(1 for v in facts.verdicts.values() if v.get("retrain") and not v.get("reissue"))
    found.append(sample("retrain_requests", requests))
    found.append(sample("drift_signal_days_in_a_row", days_in_a_row(facts.verdicts)))
    return found


def days_in_a_row(verdicts: dict[dt.date, dict[str, Any]]) -> int:
    """How many of the latest checked days, consecutive in the calendar, raised a drift signal."""
    count, expected = 0, None
    for day in sorted(verdicts, reverse=True):
        if expected is not None and day != expected:
            break
        if not verdicts[day].get("signals"):
            break
        count, expected = count + 1, day - dt.timedelta(days=1)
    return count


def performance_samples(facts: LakeFacts, span: tuple[dt.date, dt.date] | None) -> list[Sample]:
    """PR-AUC and recall at the policy FPR on labelled days, per check and the latest measured."""
    found: list[Sample] = []
    fpr = f"{TARGET_FPR:g}"
    latest: tuple[str, dict[str, Any]] | None = None
    for day, verdict in sorted(facts.verdicts.items()):
        performance = verdict.get("performance") or {}
        if performance.get("pr_auc") is None:
            continue
        version = str(verdict.get("model_version"))
        latest = (version, performance)
        if _inside(day, span):
            found.append(sample("model_pr_auc", performance["pr_auc"], day=day.isoformat(), version=version))
            recall = performance.get("recall_at_1pct_fpr")
            if recall is not None:
                found.append(
                    sample("model_recall_at_fpr", recall, day=day.isoformat(), version=version, fpr=fpr)
                )
    if latest is not None:
        version, performance = latest
        found.append(sample("model_latest_pr_auc", performance["pr_auc"], version=version))
        if performance.get("recall_at_1pct_fpr") is not None:
            found.append(
                sample(
                    "model_latest_recall_at_fpr", performance["recall_at_1pct_fpr"], version=version, fpr=fpr
                )
            )
    return found
