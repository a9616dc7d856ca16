"""Glue between the DAG files and the package: assets, the day a run works on, landing sensors.

Imported by DAG files at parse time, so it imports only ``airflow.sdk`` and the standard library
at module level; operators from providers are imported when a DAG asks for them.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, Param

from include.mlops import lake, registry
from include.mlops.core.settings import settings

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator

OWNER = "ml-platform"
START_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

# The one accepted spelling of a run's day: exactly YYYY-MM-DD in ASCII digits. `fromisoformat`
# alone also takes `20260105` or `2026-W02-1`; the pattern is checked first, then the calendar.
DAY_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_DAY_RE = re.compile(DAY_PATTERN)


# Task priority per DAG (absolute weights). When the heavy pool is contended, as in a backfill,
# a day's later stages outrank new ingestion, so days come out finished one after another instead
# of all waiting behind the last drop. Features wait for both drops of a day; labels go first, so
# that the labels drop is never the one a day is still waiting for.
PRIORITY = {
    "ingest_transactions": 1,
    "ingest_labels": 2,
    "materialize_features": 3,
    "score_transactions": 4,
    "monitor_drift": 5,
    "train_model": 6,
}


def default_args(dag_id: str, **overrides: Any) -> dict[str, Any]:
    """Retries, ownership, the DAG's task priority (:data:`PRIORITY`) and the failure alert (sent
    after the last retry: a rejected drop reports its quarantine), shared by every DAG."""
    args: dict[str, Any] = {
        "owner": OWNER,
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "priority_weight": PRIORITY[dag_id],
        "weight_rule": "absolute",
        "on_failure_callback": notifier("failure"),
    }
    args.update(overrides)
    return args


def notifier(event: str, key: str = "return_value") -> Any:
    """The project's notifier of ``event`` (``failure``, ``drift``, ``promotion``, ``rollback``) for a
    task callback, reading the task's XCom ``key``: it alerts through ``MLOPS_ALERT_CHANNELS`` and
    never fails the task."""
    from include.mlops.ops import MlopsNotifier

    return MlopsNotifier(event, key=key)


def drop_deadline(dataset: str) -> Any:
    """The ingestion DAG's deadline alert: the day's drop not landed ``MLOPS_ALERT_DROP_DEADLINE_HOURS``
    after the run was queued alerts, while the sensor keeps waiting.

    ``None`` under ``airflow dags test``: Airflow 3.3's in-process test run never registers a
    DAG's deadline alerts, and fails the finished run looking them up; a debugging run has no one
    to alert anyway.
    """
    if sys.argv[1:3] == ["dags", "test"]:
        return None
    from include.mlops.ops import drop_deadline as deadline

    return deadline(dataset)


# Asset URIs are logical names, the same in every profile; where the data physically lives is in
# `extra`. (A URI with a scheme such as s3:// also makes Airflow load every provider's URI
# handlers, boto3 included, when the DAG file is parsed: 0.3 s per file.)
def _asset(name: str, uri: str, location: str) -> Asset:
    return Asset(name=name, uri=f"mlops/{uri}", extra={"location": location})


def dataset_asset(dataset: str) -> Asset:
    """The lake asset of a validated dataset (one partition per day)."""
    return _asset(f"lake_{dataset}", f"lake/{dataset}", f"{settings().lake_url}/{dataset}")


def features_asset() -> Asset:
    """The feature snapshots of a day, offline and online (one partition per day)."""
    return _asset("features", "features", f"{settings().lake_url}/features")


def predictions_asset() -> Asset:
    """The day's scores by the champion (and the shadow challenger)."""
    return _asset("predictions", "lake/predictions", f"{settings().lake_url}/predictions")


def drift_asset() -> Asset:
    """The day's drift verdict and report."""
    return _asset("drift_signal", "monitoring/drift", f"{settings().reports_url}/drift")


def model_asset() -> Asset:
    """The registered model; an event means the champion alias was (re)considered."""
    name = settings().model_name
    return _asset("model", f"models/{name}", f"models:/{name}@{registry.CHAMPION}")


def parse_day(value: Any, source: str = "day") -> dt.date:
    """``value`` as a calendar day, if it is spelled exactly ``YYYY-MM-DD``; else a ``ValueError``.

    ``source`` names where the value came from, for the message.
    """
    text = str(value)
    if _DAY_RE.fullmatch(text):
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
    raise ValueError(
        f"{source} {text!r} is not a day: expected a calendar date written YYYY-MM-DD, e.g. 2026-01-05"
    )


def partition_day(context: Any) -> dt.date:
    """The day a run works on, validated before any path or query is built from it.

    The partition key of a partitioned run, else the ``day`` param of a manual run, else the
    logical date (what ``airflow dags test DAG YYYY-MM-DD`` gives). A key or param that is not
    exactly ``YYYY-MM-DD`` (a glob, ``..``, trailing text, a compact or impossible date) raises a
    ``ValueError`` naming it. The landing sensor's path and every task take their day from here.
    """
    dag_run = context.get("dag_run")
    key = getattr(dag_run, "partition_key", None) or context.get("partition_key")
    if key:
        return parse_day(key, "partition key")
    day = (context.get("params") or {}).get("day")
    if day:
        return parse_day(day, "`day` param")
    logical = context.get("logical_date")
    if logical is None:
        raise ValueError("this run has no partition key, no `day` param and no logical date")
    return logical.date()


def day_param(description: str) -> Param:
    """The optional ``day`` param of a DAG: the form refuses anything but ``YYYY-MM-DD``."""
    return Param(None, type=["null", "string"], format="date", pattern=DAY_PATTERN, description=description)


@dataclass(frozen=True)
class DayMarker:
    """A templated field's value: the ``_SUCCESS`` marker of the run's day of a landing dataset.

    Airflow calls it when the task's templates are rendered, so the path is built from
    :func:`partition_day`, the same validated day as the tasks', and a bad partition key or ``day``
    param fails the task there with the message instead of waiting for a path that cannot exist.
    """

    base_url: str
    dataset: str

    def url(self, day: dt.date | str) -> str:
        """The marker's URL for ``day``."""
        return f"{lake.partition_url(self.base_url, self.dataset, day)}/{lake.SUCCESS_MARKER}"

    def __call__(self, context: Any, jinja_env: Any = None) -> str:
        return self.url(partition_day(context))

    def serialize(self) -> str:
        """How the field reads in the UI before a run has rendered it."""
        return self.url("YYYY-MM-DD")


def training_day(context: Any) -> dt.date:
    """The day a ``train_model`` run trains as of: its ``as_of`` param, else the night's day.

    A nightly run at ``D+1 02:00`` (its logical date) trains as of ``D``, the last day whose
    labels drop is in; a drift retrain or a manual run names its day. Must agree with the
    ``--as-of`` template of :data:`~.training_backend.TRAINING_ARGV`.
    """
    as_of = (context.get("params") or {}).get("as_of")
    if as_of:
        return parse_day(as_of, "`as_of` param")
    dag_run = context.get("dag_run")
    # A run triggered without a logical date (REST `logical_date: null`) counts from when it ran.
    logical = context.get("logical_date") or getattr(dag_run, "run_after", None)
    if logical is None:
        raise ValueError("this train_model run has no `as_of` param, no logical date and no run time")
    return logical.date() - dt.timedelta(days=1)


@dataclass(frozen=True)
class TrainingLabels:
    """A templated field's value: the lake file of the labels partition a training run waits for."""

    base_url: str
    dataset: str = "labels"

    def url(self, day: dt.date | str) -> str:
        """The partition file's URL for ``day``."""
        return f"{lake.partition_url(self.base_url, self.dataset, day)}/{lake.DATA_FILE}"

    def __call__(self, context: Any, jinja_env: Any = None) -> str:
        return self.url(training_day(context))

    def serialize(self) -> str:
        """How the field reads in the UI before a run has rendered it."""
        return self.url("AS-OF-DAY")


def _file_sensor(path: DayMarker | TrainingLabels, **kwargs: Any) -> BaseOperator:
    """A deferrable sensor on a file of a local folder or an S3 bucket (the path's scheme decides)."""
    kwargs.setdefault("poke_interval", settings().sensor_poke_seconds)
    if path.base_url.startswith("s3://"):
        from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor

        return S3KeySensor(bucket_key=path, aws_conn_id="aws_default", deferrable=True, **kwargs)
    from airflow.providers.standard.sensors.filesystem import FileSensor

    return FileSensor(filepath=path, fs_conn_id="fs_default", deferrable=True, **kwargs)


def landing_sensor(dataset: str, **kwargs: Any) -> BaseOperator:
    """A deferrable sensor on the day's ``_SUCCESS`` marker, for a local or an S3 landing zone.

    Deferrable sensors wait in the triggerer and hold no worker slot while a drop is late.
    """
    marker = DayMarker(settings().landing_url, dataset)
    kwargs.setdefault("task_id", "wait_for_drop")
    kwargs.setdefault("timeout", dt.timedelta(hours=12).total_seconds())
    kwargs.setdefault(
        "doc_md",
        f"Waits (deferred, no worker slot) for `{marker.serialize()}`, the run's day "
        "(partition key, `day` param or logical date; anything but `YYYY-MM-DD` fails at once).",
    )
    return _file_sensor(marker, **kwargs)


TRAINING_LABELS_WAIT = dt.timedelta(days=14)
"""How long a training run waits for its labels: a drift retrain waits for the labels of its
drifted days (``MLOPS_DRIFT_RETRAIN_LABELLED_DAYS`` plus the 5-day label delay)."""


def training_labels_sensor(**kwargs: Any) -> BaseOperator:
    """A deferrable sensor on the lake's labels partition of the day a training run trains as of.

    A nightly run finds its night's labels already in; a drift retrain waits here, deferred and
    visible in the UI, until its drifted days are labelled (:func:`training_day`).
    """
    labels = TrainingLabels(settings().lake_url)
    kwargs.setdefault("task_id", "wait_for_labels")
    kwargs.setdefault("timeout", TRAINING_LABELS_WAIT.total_seconds())
    kwargs.setdefault(
        "doc_md",
        f"Waits (deferred, no worker slot) for `{labels.serialize()}`: the labels ingested for the day "
        "this run trains as of (`as_of` param, else the night before the logical date).",
    )
    return _file_sensor(labels, **kwargs)


def land_day(dataset: str, context: Any) -> dict:
    """Task body of the ingestion DAGs: validate and land the run's day, linking its Data Docs.

    A rejected drop fails at once (no retries: retrying cannot fix the data) with the operator's
    message; its quarantine Data Docs are linked from the task all the same.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from include.mlops.ingest.land import DropRejected, ingest_day
    from include.mlops.orchestration import links

    try:
        result = ingest_day(dataset, partition_day(context))
    except DropRejected as exc:
        links.push(context, **{links.DATA_DOCS: links.ui_path(exc.docs_url or exc.report_url)})
        raise AirflowFailException(str(exc)) from exc
    links.push(context, **{links.DATA_DOCS: links.ui_path(result.docs_url)})
    return result.as_dict()
