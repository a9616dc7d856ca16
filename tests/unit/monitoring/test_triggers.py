"""The retrain requests on the registered model: pending until triggered, read fail-closed.

A fake MLflow client stands in for the registry: what is written, in which order, and what an
MLflow error while reading does. The real registry is exercised in tests/integration/test_drift.py.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from include.mlops import registry
from include.mlops.core.policies import DriftPolicy
from include.mlops.monitoring import triggers
from include.mlops.monitoring.policy import Verdict

if TYPE_CHECKING:
    from pathlib import Path

D = dt.date(2026, 3, 10)


@dataclass
class FakeClient:
    """The registered model's tags, and the error a read raises (when set)."""

    tags: dict[str, str] | None = field(default_factory=dict)
    error: Exception | None = None
    writes: list[tuple[str, str]] = field(default_factory=list)

    def get_registered_model(self, name: str) -> Any:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

        if self.error is not None:
            raise self.error
        if self.tags is None:
            raise MlflowException(f"Registered Model with name={name} not found", RESOURCE_DOES_NOT_EXIST)
        return SimpleNamespace(tags=dict(self.tags))

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self.writes.append((key, value))
        self.tags = {**(self.tags or {}), key: value}

    def search_model_versions(self, query: str) -> list[Any]:
        if self.error is not None:
            raise self.error
        return []


@pytest.fixture
def client(mlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    fake = FakeClient()
    monkeypatch.setattr(registry, "configure_mlflow", lambda settings=None: fake)
    return fake


def server_error(code: str = "INTERNAL_ERROR") -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    error = MlflowException("API request failed with error code 503", databricks_pb2.ErrorCode.Value(code))
    assert error.error_code == code
    return error


def recorded(day: dt.date, triggered: str | None) -> dict[str, str]:
    tags = {triggers.TAG_DAY: day.isoformat(), triggers.TAG_REASON: f"drift on {day}: x"}
    if triggered is not None:
        tags[triggers.TAG_TRIGGERED_RUN] = triggered
    return tags


# --------------------------------------------------------------------------------------------------
# Pending until triggered


def test_the_train_model_run_id_is_derived_from_the_day() -> None:
    assert triggers.train_run_id(D) == "drift__2026-03-10" == triggers.train_run_id("2026-03-10")
    with pytest.raises(ValueError):
        triggers.train_run_id("yesterday")


@pytest.mark.parametrize(
    ("triggered", "pending"),
    [
        (triggers.PENDING, True),
        ("drift__2026-03-10", False),
        ("drift__2026-03-03", True),  # the run of an earlier request: not this one's
        (None, False),  # recorded before requests were marked: it was triggered with its check
    ],
)
def test_a_request_is_pending_until_marked_with_its_own_run_id(triggered: str | None, pending: bool) -> None:
    trigger = triggers.Trigger(day=D, triggered_run_id=triggered)
    assert trigger.pending is pending
    assert trigger.as_dict()["pending"] is pending


def test_a_request_is_recorded_pending_with_its_day_written_last(client: FakeClient) -> None:
    client.tags = recorded(D - dt.timedelta(days=9), "drift__2026-03-01")
    verdict = Verdict(D, True, ("features",), "drift on 2026-03-10: y", "retrain")
    trigger = triggers.record_trigger(verdict, 3, "run-1")
    assert trigger.pending and trigger.triggered_run_id == triggers.PENDING
    assert client.writes[-2:] == [
        (triggers.TAG_TRIGGERED_RUN, triggers.PENDING),
        (triggers.TAG_DAY, "2026-03-10"),
    ]
    read = triggers.last_trigger()
    assert read is not None and read.day == D and read.pending and read.reason == "drift on 2026-03-10: y"


def test_marking_the_request_triggered_is_idempotent(client: FakeClient) -> None:
    client.tags = recorded(D, triggers.PENDING)
    for _ in range(2):
        assert triggers.mark_triggered("2026-03-10", "drift__2026-03-10")["marked"] is True
        read = triggers.last_trigger()
        assert read is not None and not read.pending
        assert read.triggered_run_id == "drift__2026-03-10" and read.triggered_at


def test_a_request_replaced_by_a_later_day_is_not_marked(client: FakeClient) -> None:
    later = D + dt.timedelta(days=7)
    client.tags = recorded(later, triggers.PENDING)
    assert triggers.mark_triggered(D, "drift__2026-03-10")["marked"] is False
    assert client.writes == []
    read = triggers.last_trigger()
    assert read is not None and read.day == later and read.pending


def test_marking_with_another_run_id_than_the_days_is_refused(client: FakeClient) -> None:
    client.tags = recorded(D, triggers.PENDING)
    with pytest.raises(ValueError, match="drift__2026-03-10"):
        triggers.mark_triggered(D, "manual__2026-03-10T00:00:00")
    assert client.writes == []


# --------------------------------------------------------------------------------------------------
# Reading the state fails closed


def test_only_an_absent_registered_model_reads_as_never_requested(client: FakeClient) -> None:
    client.tags = None
    assert triggers.last_trigger() is None
    client.tags = {}
    assert triggers.last_trigger() is None


@pytest.mark.parametrize("code", ["INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "PERMISSION_DENIED"])
def test_an_mlflow_error_reading_the_requests_is_raised(client: FakeClient, code: str) -> None:
    from mlflow.exceptions import MlflowException

    client.tags = recorded(D, "drift__2026-03-10")
    client.error = server_error(code)
    with pytest.raises(MlflowException):
        triggers.last_trigger()
    with pytest.raises(MlflowException):
        triggers.mark_triggered(D, "drift__2026-03-10")
    assert client.writes == []


def test_an_mlflow_error_reading_the_versions_is_raised(client: FakeClient) -> None:
    from mlflow.exceptions import MlflowException

    client.error = server_error()
    recent = triggers.Trigger(day=D, requested_at=registry.now())
    with pytest.raises(MlflowException):
        triggers.retrain_running(recent, DriftPolicy())
    # An old request needs no read: its retrain no longer counts as running.
    assert (
        triggers.retrain_running(
            triggers.Trigger(day=D, requested_at="2020-01-01T00:00:00+00:00"), DriftPolicy()
        )
        is False
    )


def test_an_unreadable_request_time_is_raised_not_read_as_done(client: FakeClient) -> None:
    with pytest.raises(RuntimeError, match=triggers.TAG_AT):
        triggers.retrain_running(triggers.Trigger(day=D, requested_at="last tuesday"), DriftPolicy())
