"""Reading expectation results into an operator's words (results faked: no Great Expectations needed)."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from include.mlops.ingest import EXAMPLES, ExpectationOutcome, outcome, suite_outcomes


def result(
    kind: str,
    success: bool,
    detail: dict[str, Any] | None = None,
    *,
    column: str | None = None,
    description: str | None = None,
    error: str | None = None,
    id: str | None = None,
) -> SimpleNamespace:
    """A stand-in for one GX expectation result: only the attributes the reader looks at."""
    config = SimpleNamespace(
        type=kind, kwargs={"column": column} if column else {}, description=description, id=id
    )
    exception_info = {"raised_exception": True, "exception_message": error} if error else {}
    return SimpleNamespace(
        expectation_config=config, success=success, result=detail or {}, exception_info=exception_info
    )


def test_a_failure_reads_as_the_rule_then_what_broke_it() -> None:
    ok = ExpectationOutcome("expect_x", "amount", "amount is between 0 and 9", True)
    assert ok.explain() == "amount is between 0 and 9: ok"
    rows = ExpectationOutcome(
        "expect_x", "amount", "amount is between 0 and 9", False, 3, 100, examples=(-1.0, 12, "x", 99)
    )
    assert rows.explain() == "amount is between 0 and 9: 3 of 100 rows fail, e.g. -1.0, 12, 'x'"
    keyed = ExpectationOutcome(
        "expect_x",
        "currency",
        "currency is one of EUR",
        False,
        1,
        examples=({"transaction_id": "t1", "currency": "ZZZ"},),
    )
    assert keyed.explain() == "currency is one of EUR: 1 rows fail, e.g. (transaction_id='t1' currency='ZZZ')"
    broken = ExpectationOutcome("expect_x", "amount", "amount is small", False, error="amount holds text")
    assert broken.explain() == "amount is small: could not be checked (amount holds text)"
    observed = ExpectationOutcome("expect_rows", None, "between 5 and 9 rows", False, observed=np.int64(3))
    assert observed.explain() == "between 5 and 9 rows: found 3"


def test_an_outcome_becomes_plain_json_values() -> None:
    when = dt.datetime(2026, 1, 5, 23, 59, tzinfo=dt.UTC)
    found = ExpectationOutcome(
        "expect_x",
        "event_timestamp",
        "inside the day",
        False,
        2,
        examples=(pd.Timestamp(when), np.float64(1.5), None, float("nan"), pd.NA, {"k": np.int8(1)}),
        observed=[dt.date(2026, 1, 6)],
    ).as_dict()
    assert found["examples"] == ["2026-01-05T23:59:00+00:00", 1.5, None, None, None, {"k": 1}]
    assert found["observed"] == ["2026-01-06"]
    assert json.loads(json.dumps(found))["examples"][5] == {"k": 1}


def test_a_result_keeps_a_few_distinct_examples_and_drops_nulls() -> None:
    rows = [{"transaction_id": f"t{i % 7}", "amount": -1.0, "note": None} for i in range(40)]
    found = outcome(
        result(
            "expect_column_values_to_be_between",
            False,
            {"unexpected_count": 40, "element_count": 100, "partial_unexpected_index_list": rows},
            column="amount",
            description="amount is between 0 and 9",
        ),
        {"amount", "transaction_id"},
    )
    assert found.examples == tuple({"transaction_id": f"t{i}", "amount": -1.0} for i in range(EXAMPLES))
    assert (found.unexpected_count, found.element_count, found.success) == (40, 100, False)
    values = outcome(
        result("expect_in_set", False, {"partial_unexpected_list": [None, "ZZZ", "ZZZ", np.nan, "XXX"]}),
        set(),
    )
    assert values.examples == ("ZZZ", "XXX")
    assert values.description == "expect_in_set"  # without a description, the rule's name


def test_missing_and_unknown_columns_are_named() -> None:
    detail = {
        "observed_value": ["a", "b"],
        "details": {"mismatched": {"missing": ["channel"], "unexpected": ["chanel"]}},
    }
    found = outcome(result("expect_table_columns_to_match_set", False, detail), set())
    assert found.observed == "missing channel; unknown chanel"
    assert found.explain().endswith(": found missing channel; unknown chanel")


def test_an_expectation_on_an_absent_column_says_the_column_is_missing() -> None:
    found = outcome(
        result(
            "expect_column_values_to_not_be_null",
            False,
            column="channel",
            error="KeyError: 'channel'\nTraceback",
        ),
        {"amount"},
    )
    assert found.error == "the column is missing"
    present = outcome(result("expect_x", False, column="amount", error="boom\nmore lines"), {"amount"})
    assert present.error == "boom"


def test_outcomes_come_in_suite_order_and_type_errors_explain_the_others() -> None:
    results = [
        result(
            "expect_column_values_to_be_between", False, column="amount", error="'<' not supported", id="b"
        ),
        result(
            "expect_column_values_to_be_of_type", False, {"observed_value": "object"}, column="amount", id="a"
        ),
        result("expect_column_values_to_be_in_set", False, column="currency", error="boom", id="c"),
        result("expect_unknown", True, id="not-in-suite"),
    ]
    found = suite_outcomes(results, {"a": 0, "b": 1, "c": 2}, {"amount", "currency"})
    assert [o.expectation for o in found] == [
        "expect_column_values_to_be_of_type",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_unknown",
    ]
    assert found[1].error == "amount holds values of another type"
    assert found[2].error == "boom"  # the currency's type was fine: its own error stands
