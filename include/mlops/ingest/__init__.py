"""Ingestion: a day's drop, validated by Great Expectations, lands in the lake or is quarantined.

How a day flows: ``<landing>/<dataset>/dt=D/`` (data files, then ``_SUCCESS``) -> read into the
schema's types -> the suite derived from the schema -> ``<lake>/<dataset>/dt=D/part-00000.parquet``
with its report under ``<reports>/validation/``, or the day quarantined with its report under
``<quarantine>/`` and :class:`DropRejected` raised.

* :mod:`.land`: :func:`ingest_day`, the whole flow, and where a day's folders are (:func:`settled`,
  :func:`partition_url`, :func:`drop_marker_url`, :func:`recent_row_counts`);
* :mod:`.drops`: :func:`read_drop`, the drop's files read and cast where the contract allows it;
* :mod:`.suite`: the expectations derived from the schema (:func:`suite_expectations`,
  :func:`build_suite`), the row-count band, the pandas view the suite checks (:func:`to_frame`);
* :mod:`.validation`: :func:`validate`, the suite run through a GX checkpoint with its Data Docs;
* :mod:`.gx_import`: :func:`prepare_great_expectations`, how GX is imported (quietly, without
  the ``scipy.stats`` no suite uses);
* :mod:`.outcomes`: :class:`ExpectationOutcome`, each expectation's result in an operator's words;
* :mod:`.report`: :class:`ValidationReport`, published as ``validation.json`` and ``docs/``;
* :mod:`.quarantine`: :func:`quarantine_day`, ``rejection.json`` and the operator's message.

Only pyarrow is imported with the package: pandas and Great Expectations inside the functions.
"""

from include.mlops.ingest.drops import DropContents, DropFile, UnreadableDrop, read_drop
from include.mlops.ingest.gx_import import (
    DEFERRED_MODULES,
    defer_unused_modules,
    prepare_great_expectations,
    quiet_great_expectations,
)
from include.mlops.ingest.land import (
    DropIncomplete,
    DropRejected,
    IngestResult,
    drop_marker_url,
    ingest_day,
    partition_url,
    recent_row_counts,
    settled,
)
from include.mlops.ingest.outcomes import EXAMPLES, ExpectationOutcome, outcome, suite_outcomes
from include.mlops.ingest.quarantine import REJECTION_NAME, Rejection, quarantine_day
from include.mlops.ingest.report import DOCS_FOLDER, RESULT_NAME, ValidationReport, docs_files
from include.mlops.ingest.suite import (
    ROW_COUNT_BAND,
    ROW_COUNT_HISTORY,
    ExpectationSpec,
    build_suite,
    column_expectations,
    day_bounds,
    gx_type_name,
    row_count_bounds,
    suite_expectations,
    to_frame,
)
from include.mlops.ingest.validation import validate

__all__ = [
    "DEFERRED_MODULES",
    "DOCS_FOLDER",
    "EXAMPLES",
    "REJECTION_NAME",
    "RESULT_NAME",
    "ROW_COUNT_BAND",
    "ROW_COUNT_HISTORY",
    "DropContents",
    "DropFile",
    "DropIncomplete",
    "DropRejected",
    "ExpectationOutcome",
    "ExpectationSpec",
    "IngestResult",
    "Rejection",
    "UnreadableDrop",
    "ValidationReport",
    "build_suite",
    "column_expectations",
    "day_bounds",
    "defer_unused_modules",
    "docs_files",
    "drop_marker_url",
    "gx_type_name",
    "ingest_day",
    "outcome",
    "partition_url",
    "prepare_great_expectations",
    "quarantine_day",
    "quiet_great_expectations",
    "read_drop",
    "recent_row_counts",
    "row_count_bounds",
    "settled",
    "suite_expectations",
    "suite_outcomes",
    "to_frame",
    "validate",
]
