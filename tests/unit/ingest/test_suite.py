"""The suite derived from the schema, read as plain data (no Great Expectations needed)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa
import pytest

from include.mlops.core.schema import DATASETS, LABELS, MAX_AMOUNT, TIMESTAMP, TRANSACTIONS
from include.mlops.ingest import (
    ROW_COUNT_HISTORY,
    gx_type_name,
    row_count_bounds,
    suite_expectations,
    to_frame,
)

DAY = dt.date(2026, 1, 5)


def by_column(dataset) -> dict[str | None, dict[str, dict]]:
    """The suite's expectations by column, then by kind, with their arguments."""
    found: dict[str | None, dict[str, dict]] = {}
    for spec in suite_expectations(dataset, DAY, [1000, 1100]):
        found.setdefault(spec.column, {})
        assert spec.kind not in found[spec.column] or spec.column == dataset.timestamp_column
        found[spec.column].setdefault(spec.kind, spec.kwargs)
    return found


def test_row_count_band_follows_the_median_of_the_last_days() -> None:
    assert row_count_bounds([]) == (1, None)
    assert row_count_bounds([1000, 1200, 800]) == (500, 2000)
    assert row_count_bounds([10] * 20 + [1000] * ROW_COUNT_HISTORY) == (500, 2000)
    assert row_count_bounds([1]) == (1, 2)


@pytest.mark.parametrize("dataset", list(DATASETS.values()), ids=list(DATASETS))
def test_suite_covers_every_column_of_the_schema(dataset) -> None:
    found = by_column(dataset)
    for column in dataset.columns:
        kinds = found[column.name]
        assert kinds["ExpectColumnValuesToBeOfType"]["type_"] == gx_type_name(column.type)
        assert ("ExpectColumnValuesToNotBeNull" in kinds) is not column.nullable
        assert ("ExpectColumnValuesToBeUnique" in kinds) is column.unique
        if column.domain or column.min_value is not None:
            assert kinds.keys() & {"ExpectColumnValuesToBeInSet", "ExpectColumnValuesToBeBetween"}
    table = found[None]
    assert table["ExpectTableColumnsToMatchSet"] == {
        "column_set": dataset.names,
        "exact_match": True,
        "description": f"columns are exactly {', '.join(dataset.names)}",
    }
    assert set(table) == {"ExpectTableColumnsToMatchSet", "ExpectTableRowCountToBeBetween"}


def test_a_domain_is_a_set_a_few_integers_are_a_set_and_an_amount_is_a_range() -> None:
    transactions, labels = by_column(TRANSACTIONS), by_column(LABELS)
    currency = transactions["currency"]["ExpectColumnValuesToBeInSet"]
    assert currency["value_set"] == list(TRANSACTIONS.column("currency").domain)
    fraud = labels["is_fraud"]
    assert "ExpectColumnValuesToBeBetween" not in fraud
    assert fraud["ExpectColumnValuesToBeInSet"]["value_set"] == [0, 1]
    assert fraud["ExpectColumnValuesToBeInSet"]["description"] == "is_fraud is one of 0, 1"
    amount = transactions["amount"]["ExpectColumnValuesToBeBetween"]
    assert (amount["min_value"], amount["max_value"]) == (0.0, MAX_AMOUNT)
    assert amount["description"] == f"amount is between 0.0 and {MAX_AMOUNT}"


@pytest.mark.parametrize("dataset", list(DATASETS.values()), ids=list(DATASETS))
def test_the_event_time_must_fall_inside_the_day_it_was_dropped_for(dataset) -> None:
    last = suite_expectations(dataset, DAY)[-1]
    start = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    assert last.kind == "ExpectColumnValuesToBeBetween" and last.column == dataset.timestamp_column
    assert last.kwargs["min_value"] == start
    assert last.kwargs["max_value"] == start + dt.timedelta(days=1)
    assert last.kwargs["strict_max"] is True
    assert last.description.endswith("inside 2026-01-05 (from 2026-01-05T00:00Z, before 2026-01-06T00:00Z)")


def test_the_row_count_rule_says_which_band_it_applies() -> None:
    (without,) = [e for e in suite_expectations(LABELS, DAY) if e.kind == "ExpectTableRowCountToBeBetween"]
    assert without.kwargs["min_value"] == 1 and without.kwargs["max_value"] is None
    assert without.description == "at least 1 row (no earlier partition to compare with)"
    (banded,) = [
        e
        for e in suite_expectations(LABELS, DAY, [900, 1000, 1100])
        if e.kind == "ExpectTableRowCountToBeBetween"
    ]
    assert (banded.kwargs["min_value"], banded.kwargs["max_value"]) == (500, 2000)
    assert (
        banded.description
        == "between 500 and 2000 rows (0.5x to 2x the median 1000 of the last 3 lake partitions)"
    )


def test_type_names_are_those_of_the_pandas_view_the_suite_checks() -> None:
    assert [gx_type_name(t) for t in (pa.string(), pa.bool_(), TIMESTAMP, pa.float64(), pa.int8())] == [
        "str",
        "bool",
        "Timestamp",
        "float64",
        "int8",
    ]
    table = pa.table(
        {
            "id": pa.array(["a", None]),
            "flag": pa.array([True, None]),
            "n": pa.array([1, None], pa.int8()),
            "at": pa.array([dt.datetime(2026, 1, 5, tzinfo=dt.UTC), None], TIMESTAMP),
        }
    )
    frame = to_frame(table)
    # Nulls keep each column's kind: no silent fall back to object or float64.
    assert frame["id"].dtype == pd.StringDtype("pyarrow")
    assert frame["flag"].dtype == pd.BooleanDtype()
    assert frame["n"].dtype == pd.Int8Dtype()
    assert str(frame["at"].dtype) == "datetime64[us, UTC]"
