"""Running a day's suite with Great Expectations: :func:`validate` and its :class:`ValidationReport`.

Each run builds an ephemeral context, a validation definition and a checkpoint whose Data Docs
site lives in a temporary folder of ours (the ephemeral default is a random temporary folder),
then keeps the JSON result and the rendered pages in memory so that
:meth:`~include.mlops.ingest.report.ValidationReport.publish` can write them anywhere.

``great_expectations`` is imported inside the functions, after
:func:`~include.mlops.ingest.gx_import.prepare_great_expectations`: the import costs seconds and
DAG files import this package at parse time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.ingest.gx_import import prepare_great_expectations
from include.mlops.ingest.outcomes import EXAMPLES, suite_outcomes
from include.mlops.ingest.report import RESULT_NAME, ValidationReport, docs_files
from include.mlops.ingest.suite import build_suite, day_bounds

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterator, Sequence

    import pandas as pd

    from include.mlops.core.schema import Dataset

logger = logging.getLogger(__name__)

_SITE = "project"


@dataclass(frozen=True)
class _Checked:
    """What a validation run leaves once its temporary Data Docs folder is gone."""

    result: Any  # the suite's ExpectationSuiteValidationResult
    suite_order: dict[str, int]  # expectation id -> position in the suite
    files: dict[str, bytes]  # the Data Docs pages, by their path in a report


def validate(
    frame: pd.DataFrame,
    dataset: Dataset,
    day: dt.date,
    recent_row_counts: Sequence[int] = (),
    *,
    detail_on_failure: bool = True,
) -> ValidationReport:
    """Validate one day of ``dataset`` held in ``frame`` (see :func:`.to_frame`) with its suite.

    The first pass asks GX for counts and a few examples only. When something fails and
    ``detail_on_failure`` is set, the day is validated again with the SUMMARY format, keyed by the
    dataset's key column, so that the report and the Data Docs point at the offending rows; a
    failing day is rare and its report is read by a person. Nothing is written anywhere: call
    :meth:`ValidationReport.publish` with the folder the report belongs in.
    """
    started = time.perf_counter()
    prepare_great_expectations()
    columns = {str(c) for c in frame.columns}
    checked = _check(frame, dataset, day, recent_row_counts, columns, detail_on_failure)
    outcomes = suite_outcomes(checked.result.results, checked.suite_order, columns)
    files = checked.files
    body = checked.result.to_json_dict()
    files[RESULT_NAME] = json.dumps(body, indent=2, sort_keys=True, default=str).encode()
    report = ValidationReport(
        dataset=dataset.name,
        day=day,
        success=bool(checked.result.success),
        rows=len(frame),
        outcomes=outcomes,
        files=files,
    )
    logger.info(
        "validated %s of %s: %d rows, %d of %d expectations met (%.1f s)",
        dataset.name,
        day,
        report.rows,
        len(outcomes) - len(report.failures),
        len(outcomes),
        time.perf_counter() - started,
    )
    return report


def _check(
    frame: pd.DataFrame,
    dataset: Dataset,
    day: dt.date,
    recent_row_counts: Sequence[int],
    columns: set[str],
    detail_on_failure: bool,
) -> _Checked:
    """Run the suite on ``frame`` in an ephemeral context and render its Data Docs."""
    import great_expectations as gx

    suite = build_suite(dataset, day, recent_row_counts)
    with tempfile.TemporaryDirectory(prefix="gx-docs-") as docs_dir, _without_batch_fingerprint():
        context = _context(docs_dir)
        batch = (
            context.data_sources.add_pandas(name="landing")
            .add_dataframe_asset(name=dataset.name)
            .add_batch_definition_whole_dataframe(name=day.isoformat())
        )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(
                name=f"{dataset.name}-{day.isoformat()}", data=batch, suite=context.suites.add(suite)
            )
        )
        run = _Runner(context, definition, frame, dataset, day)
        checkpoint_result = run({"result_format": "BASIC", "partial_unexpected_count": EXAMPLES * 4}, [])
        if checkpoint_result.success or not detail_on_failure:
            # What the docs action does, on the result at hand: the pages are rendered once.
            context.build_data_docs(site_names=[_SITE])
        else:
            checkpoint_result = run.detailed(columns)
        (result,) = checkpoint_result.run_results.values()
        order = {e.id: i for i, e in enumerate(context.suites.get(dataset.name).expectations)}
        return _Checked(result, order, docs_files(Path(docs_dir)))


class _Runner:
    """Runs the validation definition through a checkpoint of a given result format."""

    def __init__(self, context: Any, definition: Any, frame: pd.DataFrame, dataset: Dataset, day: dt.date):
        from great_expectations.core.run_identifier import RunIdentifier

        self.context = context
        self.definition = definition
        self.frame = frame
        self.dataset = dataset
        self.run_id = RunIdentifier(run_name=f"{dataset.name}-{day.isoformat()}", run_time=day_bounds(day)[0])

    def __call__(self, result_format: dict[str, Any], actions: list[Any]) -> Any:
        """One checkpoint run, named after its result format; the checkpoint's result."""
        import great_expectations as gx

        checkpoint = self.context.checkpoints.add(
            gx.Checkpoint(
                name=f"{self.dataset.name}-{result_format['result_format'].lower()}",
                validation_definitions=[self.definition],
                actions=actions,
                result_format=result_format,
            )
        )
        return checkpoint.run(batch_parameters={"dataframe": self.frame}, run_id=self.run_id)

    def detailed(self, columns: set[str]) -> Any:
        """The SUMMARY run of a failing day, its bad rows keyed when the key column is there."""
        from great_expectations.checkpoint import UpdateDataDocsAction

        detail: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES * 4}
        if self.dataset.key_column in columns:
            detail["unexpected_index_column_names"] = [self.dataset.key_column]
        return self(detail, [UpdateDataDocsAction(name="data_docs", site_names=[_SITE])])


@contextlib.contextmanager
def _without_batch_fingerprint() -> Iterator[None]:
    """Skip the md5 of the whole DataFrame that GX computes to label an in-memory batch.

    On a 1M-row day the hash costs about 2 s, twice the whole suite; the label is only a marker in
    the result's metadata, and the lake file carries its own sha256.
    """
    from great_expectations.execution_engine import pandas_execution_engine as engine

    previous = engine.HASH_THRESHOLD
    engine.HASH_THRESHOLD = 0
    try:
        yield
    finally:
        engine.HASH_THRESHOLD = previous


def _context(docs_dir: str) -> Any:
    """An ephemeral GX context whose one Data Docs site is ``docs_dir``."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={
            _SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                # The validation page shows every expectation with its result; a separate page of
                # the suite alone and profiling pages would only double the rendering time.
                "site_section_builders": {"expectations": "0", "profiling": "0"},
            }
        },
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)
