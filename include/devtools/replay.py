"""The demo's replay: history played day after day under a running Airflow, in the order time gives.

A platform that went live with three weeks of history would have seen, every day, the day's drops
land, be validated, turned into features, scored by the champion *in force that day* and
monitored; and, every night, a training run whose promotion changes who scores the next day. The
replay gives Airflow exactly that order, and otherwise lets the scheduler do all the work:

* the simulator writes every day's drops into a **staging** folder first; a day "happens" when the
  replay copies its drops into the landing zone (data first, ``_SUCCESS`` last). The ingestion
  DAGs are backfilled over the whole window at the start: their deferred sensors wait until each
  day lands, and each landed day fans out through the partitioned assets (features, scoring,
  drift monitoring, which may request a drift retrain);
* ``train_model`` only acts at **night**: it is paused while days are processed and unpaused for
  the night that follows the last day of a **segment**. A night is a training night when the
  nightly cron fires for it (its run is created by the scheduler or by a backfill of that night:
  run type ``scheduled`` or ``backfill``), or when a waiting drift retrain's labels are complete.
  The next segment starts once every training of the night has finished, so a promotion on night
  ``D`` decides who scores ``D+1``;
* days between two training nights are one segment and run in parallel.

:class:`Tracker` follows the runs through the REST API; :func:`run_pipeline` drives a plan.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from include.mlops import lake

if TYPE_CHECKING:
    from collections.abc import Callable

PRODUCERS = ("ingest_transactions", "ingest_labels")
PIPELINE = (*PRODUCERS, "materialize_features", "score_transactions", "monitor_drift", "train_model")
TERMINAL = {"success", "failed"}
NIGHTLY_HOUR = 2
"""The nightly cron's hour (UTC): the run at ``D+1 02:00`` trains as of ``D``."""
MAX_SEGMENT_DAYS = 7
"""Days replayed in parallel at most between two nights that may train."""


def land(staging_url: str, landing_url: str, dataset: str, day: dt.date) -> bool:
    """Copy a staged drop of ``day`` into the landing zone: data files first, ``_SUCCESS`` last.

    Returns whether the day had a staged drop.
    """
    source = lake.partition_at(lake.location(staging_url), dataset, day)
    target = lake.partition_at(lake.location(landing_url), dataset, day)
    files = lake.list_files(source)
    if not files:
        return False
    marker = [f for f in files if f.name == lake.SUCCESS_MARKER]
    for file in [f for f in files if f.name != lake.SUCCESS_MARKER] + marker:
        lake.write_bytes(target.join(file.name), lake.read_bytes(file))
    return True


def nightly_cron(night: dt.date) -> str:
    """A weekly cron (UTC) whose run trains as of ``night`` (and every seventh night around it)."""
    tick = night + dt.timedelta(days=1)
    return f"0 {NIGHTLY_HOUR} * * {tick.isoweekday() % 7}"


def tick(night: dt.date) -> str:
    """The logical date of the nightly run of ``night`` (REST format)."""
    return f"{night + dt.timedelta(days=1)}T{NIGHTLY_HOUR:02d}:00:00Z"


def training_as_of(run: dict) -> dt.date | None:
    """The day a ``train_model`` run trains as of: its ``as_of``, else the night before its logical date."""
    conf = run.get("conf") or {}
    if conf.get("rollback_to"):
        return None
    if conf.get("as_of"):
        return dt.date.fromisoformat(conf["as_of"])
    logical = run.get("logical_date")
    if not logical:
        return None
    return dt.datetime.fromisoformat(logical.replace("Z", "+00:00")).date() - dt.timedelta(days=1)


@dataclass
class Tracker:
    """Follows the runs of the pipeline's DAGs; tells the progress display what changed."""

    client: Any
    log: Callable[[str], None]
    progress: Callable[[Tracker], None] | None = None
    seen: dict[tuple[str, str], str] = field(default_factory=dict)
    cache: dict[str, list[dict]] | None = None
    """While :meth:`wait` polls: the runs read in this poll (one REST call per DAG and poll)."""

    def runs(self, dag_id: str) -> list[dict]:
        if self.cache is None:
            return self.client.dag_runs(dag_id)
        if dag_id not in self.cache:
            self.cache[dag_id] = self.client.dag_runs(dag_id)
        return self.cache[dag_id]

    def idle(self, dag_ids) -> bool:
        """Whether every run of ``dag_ids`` has finished."""
        return all(r["state"] in TERMINAL for d in dag_ids for r in self.runs(d))

    def states(self, dag_id: str, keys: list[str] | None = None) -> dict[str, str]:
        """Latest state per partition key (or per run id for unpartitioned runs)."""
        out: dict[str, str] = {}
        for run in self.runs(dag_id):
            key = run.get("partition_key") or run["dag_run_id"]
            if keys is None or key in keys:
                out[key] = run["state"]
        return out

    def settled(self, dag_id: str, keys: list[str]) -> bool:
        states = self.states(dag_id, keys)
        return all(states.get(k) in TERMINAL for k in keys)

    def succeeded(self, dag_id: str, keys: list[str]) -> list[str]:
        states = self.states(dag_id, keys)
        return [k for k in keys if states.get(k) == "success"]

    def trainings(self, through: dt.date | None = None) -> list[dict]:
        """``train_model`` runs that train as of ``through`` or earlier (all training runs without it)."""
        out = []
        for run in self.runs("train_model"):
            as_of = training_as_of(run)
            if as_of is not None and (through is None or as_of <= through):
                out.append(run)
        return out

    def report(self) -> None:
        """Log each run that finished since the last report, then redraw the progress display."""
        for dag_id in PIPELINE:
            for key, state in self.states(dag_id).items():
                if state in TERMINAL and self.seen.get((dag_id, key)) != state:
                    self.log(f"{dag_id} {key}: {state}")
                self.seen[(dag_id, key)] = state
        if self.progress is not None:
            self.progress(self)

    def wait(self, done: Callable[[], bool], what: str, deadline: float, every: float = 3.0) -> None:
        while True:
            self.cache = {}
            try:
                self.report()
                finished = done()
            finally:
                self.cache = None
            if finished:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(every)


@dataclass
class Replay:
    """One replay of a plan against a running Airflow (see the module's documentation)."""

    demo: Any
    """The plan (:class:`include.devtools.demo.DemoPlan`)."""
    client: Any
    staging_url: str
    landing_url: str
    tracker: Tracker
    deadline: float

    def days(self, first: dt.date, last: dt.date) -> list[dt.date]:
        return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]

    def land_days(self, days: list[dt.date], labels: bool = True) -> None:
        for day in days:
            land(self.staging_url, self.landing_url, "transactions", day)
            if labels:
                land(self.staging_url, self.landing_url, "labels", day)

    def land_labels(self, day: dt.date) -> None:
        land(self.staging_url, self.landing_url, "labels", day)

    def day_done(self, keys: list[str]) -> bool:
        """Whether every stage that can run for ``keys`` has finished (the failed ones stop their day)."""
        t = self.tracker
        if not all(t.settled(d, keys) for d in PRODUCERS):
            return False
        landed = t.succeeded("ingest_transactions", keys)
        if not t.settled("materialize_features", landed):
            return False
        featured = t.succeeded("materialize_features", landed)
        if not t.settled("score_transactions", featured):
            return False
        scored = [k for k in t.succeeded("score_transactions", featured) if self.scored(k)]
        return t.settled("monitor_drift", scored)

    @staticmethod
    def scored(key: str) -> bool:
        """Whether the day has predictions (a day before the first champion is skipped, not scored)."""
        return lake.exists(lake.partition_file(lake.PREDICTIONS, dt.date.fromisoformat(key)))

    def nights_trained(self, night: dt.date) -> bool:
        """Whether every training of the night (and of earlier nights) has finished."""
        return all(run["state"] in TERMINAL for run in self.tracker.trainings(through=night))

    def next_night(self, last: dt.date) -> dt.date:
        """The end of the next segment: the next training night after ``last``, or the window's end."""
        candidates = [n for n in self.demo.nightly_nights if n > last]
        candidates += [a for a in map(training_as_of, self.tracker.trainings()) if a and a > last]
        candidates += [self.demo.end, last + dt.timedelta(days=MAX_SEGMENT_DAYS)]
        return min(candidates)

    def night(self, night: dt.date, log: Callable[[str], None]) -> None:
        """Let ``train_model`` act for ``night``: its nightly run, any retrain waiting for its labels."""
        self.client.set_paused("train_model", False)
        if night in self.demo.nightly_nights:
            # One night's backfill: a run the scheduler already made for it (scheduled) is kept.
            self.client.backfill("train_model", tick(night), tick(night), reprocess="none")
            self.tracker.wait(
                lambda: any(training_as_of(r) == night for r in self.tracker.trainings()),
                f"the nightly run of {night}",
                self.deadline,
            )
        self.tracker.wait(
            lambda: self.nights_trained(night), f"the trainings of night {night}", self.deadline
        )
        for run in self.tracker.trainings(through=night):
            if training_as_of(run) == night:
                log(f"night {night}: train_model {run['dag_run_id']} ({run.get('run_type')}) {run['state']}")
        self.client.set_paused("train_model", True)

    def segment(self, last: dt.date, night: dt.date, log: Callable[[str], None]) -> None:
        """Days ``last+1 .. night``: land them, wait for their whole chain, then the night."""
        days = self.days(last + dt.timedelta(days=1), night)
        keys = [d.isoformat() for d in days]
        log(f"days {keys[0]} .. {keys[-1]}: landing {len(keys)} day(s)")
        self.land_days(days)
        self.tracker.wait(lambda: self.day_done(keys), f"the days {keys[0]} .. {keys[-1]}", self.deadline)
        self.night(night, log)


def run_pipeline(
    demo: Any,
    client: Any,
    staging_url: str,
    landing_url: str,
    timeout: float = 1800.0,
    log: Callable[[str], None] = print,
    progress: Callable[[Tracker], None] | None = None,
) -> Tracker:
    """Replay ``demo`` (a :class:`~include.devtools.demo.DemoPlan`) against a running Airflow.

    The staged drops are under ``staging_url``; days land in ``landing_url``. Returns the tracker
    for the summary; raises ``TimeoutError`` when the pipeline does not finish in ``timeout`` s.
    """
    tracker = Tracker(client, log, progress)
    deadline = time.monotonic() + timeout
    replay = Replay(demo, client, staging_url, landing_url, tracker, deadline)
    tracker.wait(lambda: set(PIPELINE) <= set(client.dag_ids()), "the DAGs to be parsed", deadline)
    for dag_id in PIPELINE:
        client.set_paused(dag_id, dag_id == "train_model")
    # Every day's ingestion runs from the start: their sensors wait, deferred, until the day lands.
    # Unpausing a producer also schedules its latest partition (yesterday: the window's last day
    # when the window ends yesterday); the backfill leaves a day that already has a run alone.
    for dag_id in PRODUCERS:
        client.backfill(dag_id, f"{demo.start}T00:00:00Z", f"{demo.end}T00:00:00Z", reprocess="none")

    first = demo.first_training_as_of
    log(f"history: days {demo.start} .. {first} land before the first model")
    replay.land_days(replay.days(demo.start, first))
    keys = [d.isoformat() for d in replay.days(demo.start, first)]
    tracker.wait(lambda: replay.day_done(keys), "the history before the first model", deadline)

    log(f"night {first}: first model, trained as of {first}")
    client.set_paused("train_model", False)
    client.trigger(
        "train_model",
        conf={
            "reason": f"initial model (history through {first})",
            "as_of": first.isoformat(),
            "window_days": demo.train_window_days,
            "oot_days": demo.oot_days,
        },
    )
    tracker.wait(
        lambda: replay.nights_trained(first) and tracker.trainings(first), "the first model", deadline
    )
    client.set_paused("train_model", True)

    last = first
    while last < demo.end:
        night = replay.next_night(last)
        replay.segment(last, night, log)
        last = night
    client.set_paused("train_model", False)
    return tracker
