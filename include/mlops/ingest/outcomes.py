"""What each expectation found, read out of a GX result into plain values an operator can read.

:class:`ExpectationOutcome` holds the counts, a few examples and the error of one expectation;
:func:`suite_outcomes` reads a whole validation result in suite order. Nothing here imports GX: a
result is read through its attributes only. pandas is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

EXAMPLES = 5
"""Examples of bad values kept per failed expectation: enough to recognise the problem."""

# The GX name of the type expectation: a column that fails it explains the errors of the others.
_TYPE_EXPECTATION = "expect_column_values_to_be_of_type"


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


def suite_outcomes(
    results: Iterable[Any], suite_order: Mapping[str, int], frame_columns: set[str]
) -> tuple[ExpectationOutcome, ...]:
    """The outcomes of a validation's ``results``, in suite order.

    ``suite_order`` maps an expectation's id to its position in the suite; ``frame_columns`` are
    the columns the validated frame had. An expectation that could not run on a column whose
    values are of the wrong type says so, instead of the comparison's error.
    """
    outcomes = [
        outcome(r, frame_columns)
        # GX groups results by what it computes; the suite's order reads better.
        for r in sorted(results, key=lambda r: suite_order.get(r.expectation_config.id, len(suite_order)))
    ]
    mistyped = {
        o.column for o in outcomes if o.expectation == _TYPE_EXPECTATION and not o.success and not o.error
    }
    return tuple(
        # A comparison on a column holding text among numbers raises; say why instead of how.
        replace(o, error=f"{o.column} holds values of another type")
        if o.error and o.column in mistyped and o.expectation != _TYPE_EXPECTATION
        else o
        for o in outcomes
    )


def outcome(result: Any, frame_columns: set[str]) -> ExpectationOutcome:
    """One GX expectation result as an :class:`ExpectationOutcome` (examples deduplicated, nulls dropped)."""
    config = result.expectation_config
    column = config.kwargs.get("column")
    detail = result.result or {}
    error = _error_text(result.exception_info)
    if error is not None and column is not None and column not in frame_columns:
        error = "the column is missing"
    observed = detail.get("observed_value")
    mismatched = (detail.get("details") or {}).get("mismatched")
    if mismatched and not result.success:
        observed = _mismatch_text(mismatched) or observed
    return ExpectationOutcome(
        expectation=config.type,
        column=column,
        description=config.description or config.type,
        success=bool(result.success),
        unexpected_count=detail.get("unexpected_count"),
        element_count=detail.get("element_count"),
        examples=_examples(detail),
        observed=observed,
        error=error,
    )


def _examples(detail: Mapping[str, Any]) -> tuple[Any, ...]:
    """A few distinct bad rows (with their key) or values of a result, nulls left out."""
    rows = detail.get("partial_unexpected_index_list")
    if rows:
        # Each bad row with its key (the SUMMARY pass), nulls dropped: they say nothing by themselves.
        found = [{k: v for k, v in row.items() if not _missing(v)} for row in rows if isinstance(row, dict)]
        return tuple(_unique(found))[:EXAMPLES]
    if detail.get("partial_unexpected_list"):
        return tuple(_unique(v for v in detail["partial_unexpected_list"] if not _missing(v)))[:EXAMPLES]
    return ()


def _mismatch_text(mismatched: Mapping[str, Any]) -> str:
    """The columns a table lacks and those it should not have, as one phrase."""
    parts = []
    if mismatched.get("missing"):
        parts.append("missing " + ", ".join(map(str, mismatched["missing"])))
    if mismatched.get("unexpected"):
        parts.append("unknown " + ", ".join(map(str, mismatched["unexpected"])))
    return "; ".join(parts)


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


def _unique(values: Iterable[Any]) -> list[Any]:
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
