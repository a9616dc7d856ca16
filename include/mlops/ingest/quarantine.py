"""Quarantining a rejected day: its report, and the operator's message of what to do next.

``<quarantine>/<dataset>/dt=YYYY-MM-DD/`` receives ``rejection.json`` (what was wrong, the landing
files and their sha256) and, when the suite ran, the validation result and Data Docs. The lake keeps
a partition landed earlier for that day, or has none at all; the landing files are never touched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from include.mlops import lake

if TYPE_CHECKING:
    import datetime as dt

    from include.mlops.core.schema import Dataset
    from include.mlops.core.settings import Settings
    from include.mlops.ingest.drops import DropFile
    from include.mlops.ingest.report import ValidationReport
    from include.mlops.lake import Location

REJECTION_NAME = "rejection.json"
"""The quarantine report of a rejected day, in its quarantine folder."""


@dataclass(frozen=True)
class Rejection:
    """A quarantined day: the operator's message, where its report is, and each problem on its own."""

    message: str
    report_url: str
    docs_url: str | None
    problems: tuple[str, ...]


def quarantine_day(
    dataset: Dataset,
    day: dt.date,
    s: Settings,
    *,
    headline: str,
    problems: list[str],
    files: list[DropFile],
    report: ValidationReport | None,
) -> Rejection:
    """Quarantine the day (reports only; the landing files stay where they are) and say why.

    ``report`` is the failed validation, or None when the files could not be read. A lake folder
    of the day without a landed file is removed: it could only hold leftovers.
    """
    quarantine = lake.partition("quarantine", dataset.name, day, s)
    landing = lake.partition("landing", dataset.name, day, s).url
    lake_folder = lake.partition("lake", dataset.name, day, s)
    lake.delete(quarantine)
    published = report.publish(quarantine.url) if report is not None else None
    rejection = quarantine.join(REJECTION_NAME)
    if not lake.exists(lake_folder.join(lake.DATA_FILE)):
        # Without a landed file the folder can only hold leftovers, which a reader would take
        # for the day: the day must have no partition at all.
        lake.delete(lake_folder)
    lake_state = _lake_state(lake_folder, day)
    message = "\n".join(
        [
            f"{dataset.name} drop of {day.isoformat()} rejected: {headline}",
            *(p if p.startswith("  - ") else f"  - {p}" for p in problems),
            *_report_lines(published),
            f"Quarantine report: {rejection.url}",
            lake_state,
            f"The landing files in {landing} were left untouched. Fix the drop there (data files first, "
            f"{lake.SUCCESS_MARKER} last) and rerun {day.isoformat()} (clear that day's run in Airflow).",
        ]
    )
    body = {
        "dataset": dataset.name,
        "day": day.isoformat(),
        "reason": "invalid" if report is not None else "unreadable",
        "message": message,
        "landing_url": landing,
        "files": [f.as_dict() for f in files],
        "lake": lake_state,
        "validation_url": published.result_url if published else None,
        "docs_url": published.docs_url if published else None,
        "failures": [o.as_dict() for o in published.failures] if published else [],
    }
    lake.write_bytes(rejection, json.dumps(body, indent=2).encode())
    return Rejection(
        message=message,
        report_url=rejection.url,
        docs_url=published.docs_url if published else None,
        problems=tuple(p.removeprefix("  - ") for p in problems),
    )


def _report_lines(published: ValidationReport | None) -> list[str]:
    """Where the published validation result and Data Docs are, for the message."""
    if published is None:
        return []
    lines = [f"Validation result: {published.result_url}"]
    if published.docs_url:
        lines.append(f"Data Docs: {published.docs_url}")
    return lines


def _lake_state(lake_folder: Location, day: dt.date) -> str:
    """What the lake holds of the day after a rejection, for the message."""
    if lake.exists(lake_folder.join(lake.DATA_FILE)):
        return (
            f"The lake keeps the partition landed earlier for {day.isoformat()} unchanged "
            f"({lake_folder.url})."
        )
    return f"Nothing of {day.isoformat()} is in the lake."
