"""The validation report of one day: its outcomes, and its JSON result and Data Docs until published.

A report is built in memory by :func:`~include.mlops.ingest.validation.validate`;
:meth:`ValidationReport.publish` writes it anywhere :mod:`include.mlops.lake` reaches, S3 included:
``validation.json`` (the GX result) and ``docs/`` (the rendered pages and the assets they use).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from include.mlops import lake

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Mapping
    from pathlib import Path

    from include.mlops.ingest.outcomes import ExpectationOutcome

RESULT_NAME = lake.VALIDATION_RESULT
"""The file of the GX validation result in a published report."""

DOCS_FOLDER = "docs"
"""The folder of the Data Docs pages in a published report."""


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one day of one dataset.

    ``result_url`` and ``docs_url`` are set once the report is published (:meth:`publish`); until
    then the JSON result and the Data Docs pages are held in memory.
    """

    dataset: str
    day: dt.date
    success: bool
    rows: int
    outcomes: tuple[ExpectationOutcome, ...]
    result_url: str | None = None
    docs_url: str | None = None
    files: Mapping[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    @property
    def failures(self) -> tuple[ExpectationOutcome, ...]:
        """The expectations that failed, in suite order."""
        return tuple(o for o in self.outcomes if not o.success)

    def summary(self) -> str:
        """The failed expectations, one per line (empty when the day passed)."""
        return "\n".join(f"  - {o.explain()}" for o in self.failures)

    def publish(self, url: str) -> ValidationReport:
        """Write the JSON result and the Data Docs under ``url`` (a folder, local or ``s3://``).

        Earlier files there are removed first so that the folder always describes this run.
        Returns the report with ``result_url`` and ``docs_url`` set.
        """
        folder = lake.location(url)
        lake.delete(folder.join(DOCS_FOLDER))
        for relative, data in sorted(self.files.items()):
            lake.write_bytes(folder.join(relative), data)
        index = f"{DOCS_FOLDER}/index.html"
        return replace(
            self,
            result_url=folder.join(RESULT_NAME).url,
            docs_url=folder.join(index).url if index in self.files else None,
        )

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-compatible values (what a task hands on, without the pages)."""
        return {
            "dataset": self.dataset,
            "day": self.day.isoformat(),
            "success": self.success,
            "rows": self.rows,
            "result_url": self.result_url,
            "docs_url": self.docs_url,
            "failures": [o.as_dict() for o in self.failures],
        }


def docs_files(docs_dir: Path) -> dict[str, bytes]:
    """The rendered pages under ``docs_dir`` by their path in a report, and of the static assets only
    those the pages use (a few KiB, not 4 MiB)."""
    files: dict[str, bytes] = {}
    referenced: set[str] = set()
    for page in sorted(docs_dir.rglob("*.html")):
        data = page.read_bytes()
        files[f"{DOCS_FOLDER}/{page.relative_to(docs_dir).as_posix()}"] = data
        referenced.update(m.decode() for m in re.findall(rb"static/[\w./-]+", data))
    for asset in sorted(referenced):
        path = docs_dir / asset
        if path.is_file():
            files[f"{DOCS_FOLDER}/{asset}"] = path.read_bytes()
    return files
