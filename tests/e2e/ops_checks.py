"""Checks of what operations left behind after a story ran under the real scheduler.

Called by the lifecycle test once its days have run (embedded profile, default settings: alerts go
to ``$MLOPS_HOME/alerts/alerts.jsonl``, metrics to ``$MLOPS_HOME/metrics/*.prom``)::

    from tests.e2e.ops_checks import assert_story_alerts, assert_story_metrics

    quarantined, drifted = ["2026-01-09"], ["2026-01-15"]
    assert_story_alerts(home, quarantined, drifted, promoted_versions=[1, 2])
    assert_story_metrics(home, quarantined, drifted, champion_version=2)

Days are ``YYYY-MM-DD`` strings.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

SECTIONS = ("What happened: ", "Why: ", "What to do: ")


def read_alerts(home: Path) -> list[dict[str, Any]]:
    """Every alert of the alert log under ``home``, oldest first."""
    path = home / "alerts" / "alerts.jsonl"
    assert path.exists(), f"no alert log at {path}: no notifier ran (is default_args' callback lost?)"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_story_alerts(
    home: Path,
    quarantined_days: Iterable[str],
    drift_days: Iterable[str],
    promoted_versions: Iterable[int],
    *,
    quarantined_dataset: str = "transactions",
    failed_tasks: Iterable[str] = (),
    late_drops: Iterable[str] = (),
) -> dict[str, list[dict[str, Any]]]:
    """The alerts of a story: one per quarantined day (with its failed expectations and report), one
    retrain request per drift day (with its reason), one promotion per promoted version, in order;
    no failure but ``failed_tasks`` (``dag_id.task_id``), no late drop but ``late_drops``, nothing
    for a quiet day. Every message says what happened, why and what to do. Returns the alerts by event.
    """
    alerts = read_alerts(home)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for alert in alerts:
        by_event.setdefault(alert["event"], []).append(alert)
        for section in SECTIONS:
            assert section in alert["text"], f"{alert['title']!r} lacks {section.strip()!r}:\n{alert['text']}"

    quarantined = by_event.get("drop_quarantined", [])
    assert sorted({a["day"] for a in quarantined}) == sorted(set(quarantined_days)), quarantined
    for alert in quarantined:
        assert alert["facts"]["dataset"] == quarantined_dataset, alert["title"]
        assert alert["facts"]["failed_expectations"] or alert["facts"]["reason"] == "unreadable", alert
        assert "/mlops/quarantine/" in alert["links"].get("Quarantine report", ""), alert["links"]

    retrains = by_event.get("drift_retrain_requested", [])
    assert sorted(a["day"] for a in retrains) == sorted(set(drift_days)), [a["title"] for a in retrains]
    for alert in retrains:
        assert alert["why"].startswith(f"drift on {alert['day']}"), alert["why"]
        assert alert["facts"]["train_run_id"] == f"drift__{alert['day']}"
    held = [a["day"] for a in by_event.get("drift_detected", []) if a["day"] in set(drift_days)]
    assert not held, f"a day both requested and held a retrain: {held}"

    promoted = [a["version"] for a in by_event.get("model_promoted", [])]
    assert promoted == list(promoted_versions), [a["title"] for a in by_event.get("model_promoted", [])]

    failures = sorted(
        f"{a['facts']['dag_id']}.{a['facts']['task_id']}" for a in by_event.get("task_failed", [])
    )
    assert failures == sorted(failed_tasks), [a["text"] for a in by_event.get("task_failed", [])]
    late = sorted(a["day"] for a in by_event.get("drop_late", []))
    assert late == sorted(late_drops), [a["title"] for a in by_event.get("drop_late", [])]
    return by_event


def read_textfiles(home: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of the node-exporter textfiles under ``home``: ``{(name, sorted labels): value}``."""
    from prometheus_client.parser import text_string_to_metric_families

    found = {}
    for name in ("mlops_lake.prom", "mlops_registry.prom"):
        path = home / "metrics" / name
        assert path.exists(), f"{path} was never written: the mlops_metrics listener did not run"
        for family in text_string_to_metric_families(path.read_text()):
            for s in family.samples:
                found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def assert_story_metrics(
    home: Path,
    quarantined_days: Iterable[str],
    drift_days: Iterable[str],
    champion_version: int,
    *,
    quarantined_dataset: str = "transactions",
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The textfiles after a story: both sources readable, each quarantined day flagged with its
    failed expectations, each drift day's retrain request, the champion (days inside
    ``MLOPS_METRICS_RETENTION_DAYS`` of the newest day). Returns the samples."""
    found = read_textfiles(home)

    def value(name: str, **labels: str) -> float | None:
        return found.get((f"mlops_{name}", tuple(sorted(labels.items()))))

    assert value("lake_facts_up") == 1 and value("registry_facts_up") == 1
    for day in quarantined_days:
        assert value("drop_quarantined", dataset=quarantined_dataset, day=day) == 1, day
        assert (value("validation_failed_expectations", dataset=quarantined_dataset, day=day) or 0) >= 1, day
    for day in drift_days:
        assert value("drift_retrain_requested", day=day) == 1, day
    assert value("retrain_requests") == len(set(drift_days))
    assert value("champion_version") == champion_version
    assert (value("promotion_decisions", outcome="promoted") or 0) >= 1
    return found
