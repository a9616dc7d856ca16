"""The Great Expectations suites that gate the lake, derived from the schema, and how they run.

A suite is built as code for one dataset and one day by looping over the columns of
:mod:`include.mlops.core.schema`: every column present and no other, of its type, never null unless
nullable, unique when it is a key, inside its domain or its bounds, the event time inside the day,
and a row count within a band around the recent days. Nothing about a column is restated here.

Each run builds an ephemeral context, a validation definition and a checkpoint whose Data Docs
site lives in a temporary folder of ours (the ephemeral default is a random temporary folder),
then keeps the JSON result and the rendered pages in memory so that :meth:`ValidationReport.publish`
can write them anywhere :mod:`include.mlops.lake` reaches, S3 included.

``pandas`` and ``great_expectations`` are imported inside the functions: the import costs seconds
and DAG files import this package at parse time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import re
import statistics
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from include.mlops import lake

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    import great_expectations as gx
    import pandas as pd

    from include.mlops.core.schema import Column, Dataset

# A day is compared with the median of this many most recent lake partitions before it ...
ROW_COUNT_HISTORY = 7
# ... and must hold between these multiples of it: a half-empty or a doubled day is a broken
# export far more often than a real change in volume (weekdays vary by about 25 %).
ROW_COUNT_BAND = (0.5, 2.0)

# Examples of bad values kept per failed expectation: enough to recognise the problem.
EXAMPLES = 5

RESULT_NAME = lake.VALIDATION_RESULT
DOCS_FOLDER = "docs"
_SITE = "project"
_TYPE_EXPECTATION = "expect_column_values_to_be_of_type"
_TYPE_NAMES = {  # the name the pandas engine of GX compares a column's dtype with
    "string": "str",
    "large_string": "str",
    "bool": "bool",
}


def row_count_bounds(recent_row_counts: Sequence[int]) -> tuple[int, int | None]:
    """The accepted row count of a day given the row counts of the days before it, oldest first.

    With no history any non-empty day passes; otherwise the day must be within
    :data:`ROW_COUNT_BAND` of the median of the last :data:`ROW_COUNT_HISTORY` counts.
    """
    counts = [int(c) for c in recent_row_counts][-ROW_COUNT_HISTORY:]  # the most recent last
    if not counts:
        return 1, None
    median = statistics.median(counts)
    low, high = ROW_COUNT_BAND
    return max(1, math.ceil(low * median)), math.floor(high * median)


def gx_type_name(arrow_type: pa.DataType) -> str:
    """The type name that GX's pandas engine accepts for a column of ``arrow_type`` (see :func:`to_frame`)."""
    if pa.types.is_timestamp(arrow_type):
        return "Timestamp"
    name = _TYPE_NAMES.get(str(arrow_type))
    if name:
        return name
    import numpy as np

    return np.dtype(arrow_type.to_pandas_dtype()).name


def to_frame(table: pa.Table) -> pd.DataFrame:
    """The pandas view of an Arrow table that the suites are written for.

    Strings stay in Arrow memory (no Python objects: a 1M-row day converts in about 0.05 s instead
    of 1 s), booleans and integers use pandas' nullable dtypes so that a null does not silently turn
    them into ``object`` or ``float64``, timestamps keep their microsecond unit and time zone.
    """
    import pandas as pd

    mapping = {
        pa.string(): pd.StringDtype("pyarrow"),
        pa.large_string(): pd.StringDtype("pyarrow"),
        pa.bool_(): pd.BooleanDtype(),
        pa.int8(): pd.Int8Dtype(),
        pa.int16(): pd.Int16Dtype(),
        pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(),
    }
    return table.to_pandas(types_mapper=mapping.get, split_blocks=True)


def _day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def _column_expectations(column: Column) -> list[Any]:
    import great_expectations.expectations as gxe

    name = column.name
    found: list[Any] = [
        gxe.ExpectColumnValuesToBeOfType(
            column=name, type_=gx_type_name(column.type), description=f"{name} is of type {column.type}"
        )
    ]
    if not column.nullable:
        found.append(gxe.ExpectColumnValuesToNotBeNull(column=name, description=f"{name} is never null"))
    if column.unique:
        found.append(gxe.ExpectColumnValuesToBeUnique(column=name, description=f"{name} is unique"))
    # The in-set and between expectations skip nulls: the not-null one above covers them.
    if column.domain is not None:
        found.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=name,
                value_set=list(column.domain),
                description=f"{name} is one of {', '.join(column.domain)}",
            )
        )
    if column.min_value is not None or column.max_value is not None:
        small_int_range = (
            pa.types.is_integer(column.type)
            and column.min_value is not None
            and column.max_value is not None
            and column.max_value - column.min_value <= 100
        )
        if small_int_range:
            # A few integers are a domain; GX compares nullable integers one by one in Python but
            # checks set membership vectorised.
            values = list(range(int(column.min_value), int(column.max_value) + 1))
            found.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=name,
                    value_set=values,
                    description=f"{name} is one of {', '.join(str(v) for v in values)}",
                )
            )
        else:
            found.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=name,
                    min_value=column.min_value,
                    max_value=column.max_value,
                    description=f"{name} is between {column.min_value} and {column.max_value}",
                )
            )
    return found


def build_suite(dataset: Dataset, day: dt.date, recent_row_counts: Sequence[int] = ()) -> gx.ExpectationSuite:
    """The expectation suite of ``dataset`` for ``day``, derived from the schema.

    ``recent_row_counts`` are the row counts of the recent lake partitions of the dataset (see
    :func:`row_count_bounds`); the suite's name carries the dataset only, so that Data Docs group
    every day of a dataset under one suite.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    low, high = row_count_bounds(recent_row_counts)
    if high is None:
        count_text = "at least 1 row (no earlier partition to compare with)"
    else:
        recent = list(recent_row_counts)[-ROW_COUNT_HISTORY:]
        count_text = (
            f"between {low} and {high} rows ({ROW_COUNT_BAND[0]:g}x to {ROW_COUNT_BAND[1]:g}x the median "
            f"{statistics.median(recent):g} of the last {len(recent)} lake partitions)"
        )
    start, end = _day_bounds(day)
    expectations: list[Any] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=dataset.names,
            exact_match=True,
            description=f"columns are exactly {', '.join(dataset.names)}",
        ),
        gxe.ExpectTableRowCountToBeBetween(min_value=low, max_value=high, description=count_text),
    ]
    for column in dataset.columns:
        expectations.extend(_column_expectations(column))
    expectations.append(
        gxe.ExpectColumnValuesToBeBetween(
            column=dataset.timestamp_column,
            min_value=start,
            max_value=end,
            strict_max=True,
            description=(
                f"{dataset.timestamp_column} is inside {day.isoformat()} "
                f"(from {start:%Y-%m-%dT%H:%MZ}, before {end:%Y-%m-%dT%H:%MZ})"
            ),
        )
    )
    return gx.ExpectationSuite(name=dataset.name, expectations=expectations)


@dataclass(frozen=True)
class ExpectationOutcome:
    """What one expectation found: the counts and a few examples when it failed."""

    expectation: str
    column: str | None
    description: str
    success: bool
    unexpected_count: int | None = None
    element_count: int | None = None
    examples: tuple[Any, ...] = ()
    observed: Any = None
    error: str | None = None

    def explain(self) -> str:
        """One line for an operator: the rule, then what broke it."""
        if self.success:
            return f"{self.description}: ok"
        if self.error is not None:
            return f"{self.description}: could not be checked ({self.error})"
        if self.unexpected_count is not None:
            of = f" of {self.element_count}" if self.element_count is not None else ""
            shown = ", ".join(_show(v) for v in self.examples[:3])
            text = f"{self.description}: {self.unexpected_count}{of} rows fail"
            return f"{text}, e.g. {shown}" if shown else text
        observed = self.observed if isinstance(self.observed, str) else _show(self.observed)
        return f"{self.description}: found {observed}"

    def as_dict(self) -> dict[str, Any]:
        """The outcome as JSON-compatible values."""
        return {
            "expectation": self.expectation,
            "column": self.column,
            "description": self.description,
            "success": self.success,
            "unexpected_count": self.unexpected_count,
            "element_count": self.element_count,
            "examples": [_jsonable(v) for v in self.examples],
            "observed": _jsonable(self.observed),
            "error": self.error,
        }


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


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "(" + " ".join(f"{k}={_show(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(_jsonable(value))


def _missing(value: Any) -> bool:
    """None, NaN, NaT or pandas' NA."""
    if value is None:
        return True
    import pandas as pd

    return bool(pd.api.types.is_scalar(value) and pd.isna(value))


def _unique(values: Any) -> list[Any]:
    """The values in order, each once (values may be unhashable dicts)."""
    seen: set[str] = set()
    kept = []
    for value in values:
        key = json.dumps(_jsonable(value), sort_keys=True)
        if key not in seen:
            seen.add(key)
            kept.append(value)
    return kept


def _jsonable(value: Any) -> Any:
    if _missing(value):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy and pandas scalars
        with contextlib.suppress(ValueError, TypeError):
            return _jsonable(value.item())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _error_text(exception_info: Any) -> str | None:
    """The first exception message of a result; GX nests them by metric in some versions."""
    if not exception_info:
        return None
    if isinstance(exception_info, dict) and "raised_exception" in exception_info:
        infos = [exception_info]
    elif isinstance(exception_info, dict):
        infos = [v for v in exception_info.values() if isinstance(v, dict)]
    else:
        return None
    for info in infos:
        if info.get("raised_exception"):
            message = str(info.get("exception_message") or "unknown error").strip()
            return message.splitlines()[0][:300]
    return None


def _outcome(result: Any, frame_columns: set[str]) -> ExpectationOutcome:
    config = result.expectation_config
    column = config.kwargs.get("column")
    detail = result.result or {}
    description = config.description or config.type
    error = _error_text(result.exception_info)
    if error is not None and column is not None and column not in frame_columns:
        error = "the column is missing"
    examples: tuple[Any, ...] = ()
    observed = detail.get("observed_value")
    rows = detail.get("partial_unexpected_index_list")
    if rows:
        # Each bad row with its key (the SUMMARY pass), nulls dropped: they say nothing by themselves.
        found = [{k: v for k, v in row.items() if not _missing(v)} for row in rows if isinstance(row, dict)]
        examples = tuple(_unique(found))[:EXAMPLES]
    elif detail.get("partial_unexpected_list"):
        examples = tuple(_unique(v for v in detail["partial_unexpected_list"] if not _missing(v)))[:EXAMPLES]
    mismatched = (detail.get("details") or {}).get("mismatched")
    if mismatched and not result.success:
        parts = []
        if mismatched.get("missing"):
            parts.append("missing " + ", ".join(map(str, mismatched["missing"])))
        if mismatched.get("unexpected"):
            parts.append("unknown " + ", ".join(map(str, mismatched["unexpected"])))
        observed = "; ".join(parts) or observed
    return ExpectationOutcome(
        expectation=config.type,
        column=column,
        description=description,
        success=bool(result.success),
        unexpected_count=detail.get("unexpected_count"),
        element_count=detail.get("element_count"),
        examples=examples,
        observed=observed,
        error=error,
    )


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


def _docs_files(docs_dir: Path) -> dict[str, bytes]:
    """The rendered pages, and of the static assets only those the pages use (a few KiB, not 4 MiB)."""
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


def validate(
    frame: pd.DataFrame,
    dataset: Dataset,
    day: dt.date,
    recent_row_counts: Sequence[int] = (),
    *,
    detail_on_failure: bool = True,
) -> ValidationReport:
    """Validate one day of ``dataset`` held in ``frame`` (see :func:`to_frame`) with its suite.

    The first pass asks GX for counts and a few examples only. When something fails and
    ``detail_on_failure`` is set, the day is validated again with the SUMMARY format, keyed by the
    dataset's key column, so that the report and the Data Docs point at the offending rows; a
    failing day is rare and its report is read by a person. Nothing is written anywhere: call
    :meth:`ValidationReport.publish` with the folder the report belongs in.
    """
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    suite = build_suite(dataset, day, recent_row_counts)
    run_id = RunIdentifier(run_name=f"{dataset.name}-{day.isoformat()}", run_time=_day_bounds(day)[0])
    columns = {str(c) for c in frame.columns}

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

        def run(result_format: dict[str, Any], actions: list[Any]) -> Any:
            checkpoint = context.checkpoints.add(
                gx.Checkpoint(
                    name=f"{dataset.name}-{result_format['result_format'].lower()}",
                    validation_definitions=[definition],
                    actions=actions,
                    result_format=result_format,
                )
            )
            return checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)

        docs = UpdateDataDocsAction(name="data_docs", site_names=[_SITE])
        checkpoint_result = run({"result_format": "BASIC", "partial_unexpected_count": EXAMPLES * 4}, [])
        if checkpoint_result.success or not detail_on_failure:
            # What the docs action does, on the result at hand: the pages are rendered once.
            context.build_data_docs(site_names=[_SITE])
        else:
            detail: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES * 4}
            if dataset.key_column in columns:
                detail["unexpected_index_column_names"] = [dataset.key_column]
            checkpoint_result = run(detail, [docs])
        (result,) = checkpoint_result.run_results.values()
        order = {e.id: i for i, e in enumerate(context.suites.get(dataset.name).expectations)}
        files = _docs_files(Path(docs_dir))

    outcomes = [
        _outcome(r, columns)
        # GX groups results by what it computes; the suite's order reads better.
        for r in sorted(result.results, key=lambda r: order.get(r.expectation_config.id, len(order)))
    ]
    mistyped = {
        o.column for o in outcomes if o.expectation == _TYPE_EXPECTATION and not o.success and not o.error
    }
    outcomes = [
        # A comparison on a column holding text among numbers raises; say why instead of how.
        replace(o, error=f"{o.column} holds values of another type")
        if o.error and o.column in mistyped and o.expectation != _TYPE_EXPECTATION
        else o
        for o in outcomes
    ]
    body = result.to_json_dict()
    files[RESULT_NAME] = json.dumps(body, indent=2, sort_keys=True, default=str).encode()
    return ValidationReport(
        dataset=dataset.name,
        day=day,
        success=bool(result.success),
        rows=len(frame),
        outcomes=tuple(outcomes),
        files=files,
    )
