"""The Great Expectations suite of a dataset's day, derived from the schema.

The suite loops over the columns of :mod:`include.mlops.core.schema`: every column present and no
other, of its type, never null unless nullable, unique when it is a key, inside its domain or its
bounds, the event time inside the day, and a row count within a band around the recent days.
Nothing about a column is restated here.

The derivation itself is plain data (:class:`ExpectationSpec`, :func:`suite_expectations`), so it
reads and tests without GX; :func:`build_suite` turns it into GX expectations. ``pandas`` and
``great_expectations`` are imported inside the functions: the import costs seconds and DAG files
import this package at parse time.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from include.mlops.ingest.gx_import import prepare_great_expectations

if TYPE_CHECKING:
    from collections.abc import Sequence

    import great_expectations as gx
    import pandas as pd

    from include.mlops.core.schema import Column, Dataset

ROW_COUNT_HISTORY = 7
"""A day's row count is compared with the median of this many most recent lake partitions before it."""

ROW_COUNT_BAND = (0.5, 2.0)
"""The multiples of that median a day must hold between.

A half-empty or a doubled day is a broken export far more often than a real change in volume
(weekdays vary by about 25 %).
"""

# An integer range this narrow is checked as a set: GX compares nullable integers one by one in
# Python but checks set membership vectorised.
_SMALL_INT_RANGE = 100

_TYPE_NAMES = {  # the name the pandas engine of GX compares a column's dtype with
    "string": "str",
    "large_string": "str",
    "bool": "bool",
}


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation as plain data: the GX expectation class name and its arguments."""

    kind: str
    kwargs: dict[str, Any]

    @property
    def column(self) -> str | None:
        """The column it is about; None for a table-level expectation."""
        return self.kwargs.get("column")

    @property
    def description(self) -> str:
        """The sentence the report and the Data Docs show for it."""
        return self.kwargs["description"]


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


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The instants ``day`` covers: from its midnight UTC (included) to the next (excluded)."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def column_expectations(column: Column) -> list[ExpectationSpec]:
    """What the schema says about one column: its type, then null, unique, domain and bounds rules."""
    name = column.name
    found = [
        ExpectationSpec(
            "ExpectColumnValuesToBeOfType",
            {
                "column": name,
                "type_": gx_type_name(column.type),
                "description": f"{name} is of type {column.type}",
            },
        )
    ]
    if not column.nullable:
        found.append(
            ExpectationSpec(
                "ExpectColumnValuesToNotBeNull", {"column": name, "description": f"{name} is never null"}
            )
        )
    if column.unique:
        found.append(
            ExpectationSpec(
                "ExpectColumnValuesToBeUnique", {"column": name, "description": f"{name} is unique"}
            )
        )
    # The in-set and between expectations skip nulls: the not-null one above covers them.
    if column.domain is not None:
        found.append(_in_set(name, list(column.domain), ", ".join(column.domain)))
    if column.min_value is not None or column.max_value is not None:
        found.append(_bounds(column))
    return found


def _in_set(name: str, values: list[Any], shown: str) -> ExpectationSpec:
    return ExpectationSpec(
        "ExpectColumnValuesToBeInSet",
        {"column": name, "value_set": values, "description": f"{name} is one of {shown}"},
    )


def _bounds(column: Column) -> ExpectationSpec:
    """The rule of a column with a minimum or a maximum: a set for a few integers, a range otherwise."""
    name, low, high = column.name, column.min_value, column.max_value
    if (
        pa.types.is_integer(column.type)
        and low is not None
        and high is not None
        and high - low <= _SMALL_INT_RANGE
    ):
        values = list(range(int(low), int(high) + 1))
        return _in_set(name, values, ", ".join(str(v) for v in values))
    return ExpectationSpec(
        "ExpectColumnValuesToBeBetween",
        {
            "column": name,
            "min_value": low,
            "max_value": high,
            "description": f"{name} is between {low} and {high}",
        },
    )


def _row_count_description(recent_row_counts: Sequence[int], low: int, high: int | None) -> str:
    if high is None:
        return "at least 1 row (no earlier partition to compare with)"
    recent = list(recent_row_counts)[-ROW_COUNT_HISTORY:]
    return (
        f"between {low} and {high} rows ({ROW_COUNT_BAND[0]:g}x to {ROW_COUNT_BAND[1]:g}x the median "
        f"{statistics.median(recent):g} of the last {len(recent)} lake partitions)"
    )


def suite_expectations(
    dataset: Dataset, day: dt.date, recent_row_counts: Sequence[int] = ()
) -> list[ExpectationSpec]:
    """The expectations of ``dataset`` for ``day``, in suite order, without GX.

    The table's columns and row count first, then each column's rules in schema order (see
    :func:`column_expectations`), then the event time inside the day.
    """
    low, high = row_count_bounds(recent_row_counts)
    start, end = day_bounds(day)
    names = dataset.names
    found = [
        ExpectationSpec(
            "ExpectTableColumnsToMatchSet",
            {
                "column_set": names,
                "exact_match": True,
                "description": f"columns are exactly {', '.join(names)}",
            },
        ),
        ExpectationSpec(
            "ExpectTableRowCountToBeBetween",
            {
                "min_value": low,
                "max_value": high,
                "description": _row_count_description(recent_row_counts, low, high),
            },
        ),
    ]
    for column in dataset.columns:
        found.extend(column_expectations(column))
    time_column = dataset.timestamp_column
    inside = (
        f"{time_column} is inside {day.isoformat()} "
        f"(from {start:%Y-%m-%dT%H:%MZ}, before {end:%Y-%m-%dT%H:%MZ})"
    )
    found.append(
        ExpectationSpec(
            "ExpectColumnValuesToBeBetween",
            {
                "column": time_column,
                "min_value": start,
                "max_value": end,
                "strict_max": True,
                "description": inside,
            },
        )
    )
    return found


def build_suite(dataset: Dataset, day: dt.date, recent_row_counts: Sequence[int] = ()) -> gx.ExpectationSuite:
    """The expectation suite of ``dataset`` for ``day``, derived from the schema.

    ``recent_row_counts`` are the row counts of the recent lake partitions of the dataset (see
    :func:`row_count_bounds`); the suite's name carries the dataset only, so that Data Docs group
    every day of a dataset under one suite.
    """
    prepare_great_expectations()
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations = [
        getattr(gxe, e.kind)(**e.kwargs) for e in suite_expectations(dataset, day, recent_row_counts)
    ]
    return gx.ExpectationSuite(name=dataset.name, expectations=expectations)
