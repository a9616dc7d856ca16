"""The main job on the embedded profile: ``make demo``.

Replays a few weeks of card payments through the whole pipeline under a real local Airflow
scheduler, as if the platform went live today with that history:

1. **simulate** ``--days`` days ending yesterday into the landing zone, with drift from the
   ``--drift-day``-th day;
2. **ingest**: unpause the pipeline and backfill both ingestion DAGs through the REST API; each
   landed day fans out to ``materialize_features`` through its partitioned asset;
3. **first model**: trigger ``train_model`` as of the first day with five fully labelled days
   behind it (labels arrive up to 5 days late) and let the policy promote it;
4. **score and monitor**: trigger ``score_transactions`` for each day after that; each scored day
   fans out to ``monitor_drift``, which triggers ``train_model`` with the reason when drift
   passes the policy (once, under the cooldown), and the promotion decision follows.

It prints progress while it runs, a per-day summary table at the end, where the reports are and
how to open the Airflow and MLflow UIs, and exits non-zero if any stage failed. The nightly
training cron is switched off (``MLOPS_TRAIN_CRON=none``) in the Airflow it starts, so that every
training in the replay is one the story asks for.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from include.devtools import local_airflow
from include.mlops import lake
from include.mlops.core.schema import CHAMPION_VERSION
from include.mlops.core.settings import settings

PRODUCERS = ("ingest_transactions", "ingest_labels")
PIPELINE = (*PRODUCERS, "materialize_features", "score_transactions", "monitor_drift", "train_model")
TERMINAL = {"success", "failed"}
FIRST_MODEL_LABELLED_DAYS = 5
"""Fully labelled days the first model learns from (training days plus one out-of-time day)."""


@dataclass
class DemoPlan:
    """The replayed window and the story's key days."""

    start: dt.date
    days: int
    rows_per_day: int
    drift_from: dt.date | None
    seed: int
    first_training_as_of: dt.date
    train_window_days: int = 8
    oot_days: int = 3
    bad_day: dt.date | None = None

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days - 1)

    @property
    def keys(self) -> list[str]:
        return [(self.start + dt.timedelta(days=i)).isoformat() for i in range(self.days)]

    @property
    def scored_keys(self) -> list[str]:
        """Days after the first model's data: the ones it scores in production."""
        first = self.first_training_as_of.isoformat()
        return [k for k in self.keys if k > first]


def plan(
    days: int,
    rows_per_day: int,
    drift_day: int | None,
    seed: int,
    today: dt.date,
    first_training_day: int | None = None,
) -> DemoPlan:
    """The demo's window: ``days`` days ending yesterday; drift from the ``drift_day``-th day.

    The first model is trained as of the first day with :data:`FIRST_MODEL_LABELLED_DAYS` fully
    labelled days behind it (or ``first_training_day``), before the drift; the drift-triggered
    retrain later learns from more labelled days than it did, so the promotion step compares two
    different models.
    """
    from include.mlops.core.schema import MAX_LABEL_DELAY_DAYS

    start = today - dt.timedelta(days=days)
    drift_from = start + dt.timedelta(days=drift_day - 1) if drift_day else None
    earliest = FIRST_MODEL_LABELLED_DAYS + MAX_LABEL_DELAY_DAYS + 1
    first = first_training_day or (min(earliest, drift_day - 1) if drift_day else max(earliest, days // 2))
    # Labels trail by up to 5 days: the first model can only use the days fully labelled by then,
    # split into training days and out-of-time days; and the window's first day has no feature
    # snapshot before it, so payments start counting from the second day.
    labelled = first - MAX_LABEL_DELAY_DAYS - 1
    if labelled < 4:
        raise ValueError(
            f"the first model trains as of day {first}: only {max(labelled, 0)} fully labelled days; "
            f"use more --days or a later --drift-day (labels arrive up to {MAX_LABEL_DELAY_DAYS} days late)"
        )
    oot = max(1, min(3, labelled // 4))
    return DemoPlan(
        start, days, rows_per_day, drift_from, seed, start + dt.timedelta(days=first - 1), labelled - oot, oot
    )


def _log(message: str) -> None:
    print(f"[demo {dt.datetime.now():%H:%M:%S}] {message}", flush=True)


@dataclass
class Tracker:
    """Follows the runs of the pipeline's DAGs and prints each one that finishes."""

    client: Any
    log: Any = _log
    seen: dict[tuple[str, str], str] = field(default_factory=dict)

    def runs(self, dag_id: str) -> list[dict]:
        return self.client.dag_runs(dag_id)

    def states(self, dag_id: str, keys: list[str] | None = None) -> dict[str, str]:
        """Latest state per partition key (or per run id for unpartitioned runs)."""
        out: dict[str, str] = {}
        for run in self.runs(dag_id):
            key = run.get("partition_key") or run["dag_run_id"]
            if keys is None or key in keys:
                out[key] = run["state"]
        return out

    def report(self) -> None:
        for dag_id in PIPELINE:
            for key, state in self.states(dag_id).items():
                if state in TERMINAL and self.seen.get((dag_id, key)) != state:
                    self.log(f"{dag_id} {key}: {state}")
                self.seen[(dag_id, key)] = state

    def wait(self, done, what: str, timeout: float, every: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.report()
            if done():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(every)

    def settled(self, dag_id: str, keys: list[str]) -> bool:
        states = self.states(dag_id, keys)
        return all(states.get(k) in TERMINAL for k in keys)

    def idle(self, dag_ids) -> bool:
        return all(r["state"] in TERMINAL for d in dag_ids for r in self.runs(d))


def _rows(dataset: str, day: str) -> int | None:
    files = lake.data_files(lake.partition("lake", dataset, day))
    return sum(lake.parquet_rows(f) for f in files) if files else None


def _json(url: str) -> dict | None:
    loc = lake.location(url)
    return json.loads(lake.read_bytes(loc)) if lake.exists(loc) else None


def _predictions_file(day: str) -> lake.Location:
    """The day's predictions file (scored by a champion), as a storage location."""
    return lake.partition_file(lake.PREDICTIONS, dt.date.fromisoformat(day))


def _champion_of(day: str) -> str:
    import pyarrow.parquet as pq

    loc = _predictions_file(day)
    if not lake.exists(loc):
        return "-"
    with loc.fs.open_input_file(loc.path) as handle:
        versions = pq.read_table(handle, columns=[CHAMPION_VERSION]).column(0).unique().to_pylist()
    return ",".join(f"v{v}" for v in versions)


def day_summary(demo: DemoPlan, tracker: Tracker) -> list[dict]:
    """One row per day: rows, validation outcomes, drift share, champion, decisions."""
    s = settings()
    ingest = {d: tracker.states(d, demo.keys) for d in PRODUCERS}
    rows = []
    for key in demo.keys:
        verdict = _json(lake.partition("reports", lake.DRIFT_REPORTS, key, s).join("verdict.json").url) or {}
        share = verdict.get("drift_share", verdict.get("share_drifted"))
        rows.append(
            {
                "day": key,
                "drift_injected": bool(demo.drift_from and key >= demo.drift_from.isoformat()),
                "transactions": _rows("transactions", key),
                "transactions_validation": ingest["ingest_transactions"].get(key, "-"),
                "labels_validation": ingest["ingest_labels"].get(key, "-"),
                "drift_share": share,
                "champion": _champion_of(key),
                "decision": "retrain triggered" if verdict.get("retrain") else "",
            }
        )
    return rows


def format_summary(rows: list[dict]) -> str:
    header = (
        f"{'day':<11} {'drift?':<6} {'rows':>7} {'txn GX':<8} {'labels GX':<9} "
        f"{'drift share':>11} {'champion':<9} decision"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        share = "-" if r["drift_share"] is None else f"{r['drift_share']:.2f}"
        lines.append(
            f"{r['day']:<11} {'yes' if r['drift_injected'] else '':<6} "
            f"{r['transactions'] if r['transactions'] is not None else '-':>7} "
            f"{r['transactions_validation']:<8} {r['labels_validation']:<9} {share:>11} "
            f"{r['champion']:<9} {r['decision']}"
        )
    return "\n".join(lines)


def training_decisions(tracker: Tracker) -> list[str]:
    """One line per train_model run: why it ran and what the promotion step decided."""
    lines = []
    for run in tracker.runs("train_model"):
        conf = run.get("conf") or {}
        outcome = "?"
        tis = {t["task_id"]: t for t in tracker.client.task_instances("train_model", run["dag_run_id"])}
        if "evaluate_and_promote" in tis:
            outcome = tis["evaluate_and_promote"]["state"] or "-"
            try:
                value = tracker.client.get(
                    f"/api/v2/dags/train_model/dagRuns/{_q(run['dag_run_id'])}/taskInstances/"
                    "evaluate_and_promote/xcomEntries/return_value"
                )["value"]
                result = value if isinstance(value, dict) else json.loads(value)
                outcome = f"{result['outcome']}: v{result['challenger_version']} ({result['reason']})"
            except Exception:
                pass
        lines.append(f"{run['state']:<8} reason={conf.get('reason', 'nightly')!r} -> {outcome}")
    return lines


def _q(text: str) -> str:
    import urllib.parse

    return urllib.parse.quote(text, safe="")


def run_pipeline(demo: DemoPlan, client: Any, timeout: float = 1800.0, log=_log) -> Tracker:
    """Drive stages 2-4 against a running Airflow; returns the tracker for the summary.

    The replay keeps production's order: every day is in before the first model trains, and the
    days after it are scored (and monitored) oldest first. Their scheduled scoring runs ran before
    there was a champion and skipped, so they are triggered again once the first model is in.
    """
    tracker = Tracker(client, log)
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(deadline - time.monotonic(), 1.0)

    tracker.wait(lambda: set(PIPELINE) <= set(client.dag_ids()), "the DAGs to be parsed", 120)
    for dag_id in PIPELINE:
        client.unpause(dag_id)
    # Unpausing a producer schedules its latest partition (yesterday, the window's last day);
    # the backfill covers the days before it.
    for dag_id in PRODUCERS:
        if demo.days > 1:
            client.backfill(dag_id, f"{demo.start}T00:00:00Z", f"{demo.end - dt.timedelta(days=1)}T00:00:00Z")
    log(f"stage ingest: backfilling {demo.start} .. {demo.end} ({demo.days} days x 2 datasets)")
    good_keys = [k for k in demo.keys if not (demo.bad_day and k == demo.bad_day.isoformat())]
    tracker.wait(
        lambda: (
            all(tracker.settled(d, demo.keys) for d in PRODUCERS)
            and tracker.settled("materialize_features", good_keys)
        ),
        "ingestion and features of every day",
        left(),
    )
    as_of = demo.first_training_as_of.isoformat()
    log(f"stage first model: training as of {as_of}")
    client.trigger(
        "train_model",
        conf={
            "reason": f"initial model (history through {as_of})",
            "as_of": as_of,
            "window_days": demo.train_window_days,
            "oot_days": demo.oot_days,
        },
    )
    tracker.wait(
        lambda: tracker.idle(["train_model"]) and tracker.runs("train_model"), "first training", left()
    )

    scored = [k for k in demo.scored_keys if k in good_keys]
    tracker.wait(lambda: tracker.settled("score_transactions", scored), "the scheduled scoring runs", left())
    states = tracker.states("score_transactions", scored)
    # A run that finished without predictions ran before the first promotion (it skipped).
    missing = [k for k in scored if states.get(k) == "success" and not lake.exists(_predictions_file(k))]
    log(
        f"stage score and monitor: {scored[0]} .. {scored[-1]} ({len(scored)} days: "
        f"{len(missing)} triggered, {len(scored) - len(missing)} already scored)"
    )
    for key in missing:
        client.trigger("score_transactions", partition_key=key)
        time.sleep(0.5)  # SQLite: one write at a time keeps the API from answering 500
    tracker.wait(
        lambda: (
            tracker.settled("score_transactions", scored)
            and tracker.settled(
                "monitor_drift",
                [k for k in scored if tracker.states("score_transactions").get(k) == "success"],
            )
            and tracker.idle(["monitor_drift", "train_model"])
        ),
        "scoring, monitoring and any retraining",
        left(),
    )
    return tracker


def failures(demo: DemoPlan, tracker: Tracker) -> list[str]:
    """Runs that failed, except the deliberately bad day's ingestion."""
    bad = demo.bad_day.isoformat() if demo.bad_day else None
    out = []
    for dag_id in PIPELINE:
        for key, state in tracker.states(dag_id).items():
            if state == "failed" and not (key == bad and dag_id == "ingest_transactions"):
                out.append(f"{dag_id} {key}")
    return out


def run_demo(demo: DemoPlan, keep_up: bool = False, timeout: float = 1800.0) -> int:
    from include.devtools.airflow_api import AirflowClient
    from include.devtools.simulator import SimulationConfig, simulate

    s = settings()
    if local_airflow.running():
        _log("a local Airflow is already running: `make down` first (the demo starts its own)")
        return 2
    started = time.monotonic()
    _log(
        f"stage simulate: {demo.days} days {demo.start} .. {demo.end}, {demo.rows_per_day} rows/day, "
        f"drift from {demo.drift_from or 'never'} -> {s.landing_url}"
    )
    config = SimulationConfig(seed=demo.seed, rows_per_day=demo.rows_per_day, drift_from=demo.drift_from)
    simulate(demo.start, demo.days, config, s.landing_url, progress=lambda line: _log(f"  {line}"))

    os.environ["MLOPS_TRAIN_CRON"] = "none"
    _log("starting the local Airflow")
    local_airflow.up()
    client = AirflowClient(local_airflow.base_url(), local_airflow.USER, local_airflow.password())
    failed: list[str] = []
    try:
        tracker = run_pipeline(demo, client, timeout=timeout)
        failed = failures(demo, tracker)
        print()
        print(format_summary(day_summary(demo, tracker)))
        print()
        print("train_model runs:")
        for line in training_decisions(tracker):
            print(f"  {line}")
        print()
        print(f"Lake:          {s.lake_url}")
        print(f"Quarantine:    {s.quarantine_url}")
        print(f"Reports:       {s.reports_url}  (Data Docs per day, drift reports per day)")
        login = f"{local_airflow.USER} / {local_airflow.password()}"
        print(f"Airflow UI:    {local_airflow.base_url()}  login {login}  (make demo ARGS=--keep-up)")
        print(f"MLflow UI:     make mlflow   (then http://127.0.0.1:5000; tracking {s.mlflow_tracking_uri})")
    except TimeoutError as exc:
        failed.append(str(exc))
    finally:
        if keep_up:
            _log("Airflow keeps running (--keep-up); `make down` stops it")
        else:
            local_airflow.down()
            _log("stopped the local Airflow")
    minutes = (time.monotonic() - started) / 60
    if failed:
        _log(f"FAILED after {minutes:.1f} min: " + "; ".join(failed))
        return 1
    _log(f"done in {minutes:.1f} min: every stage succeeded")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo ARGS=...", description=__doc__)
    parser.add_argument("--days", type=int, default=21, help="days of history (default 21)")
    parser.add_argument("--rows-per-day", type=int, default=20_000, help="payments a day (default 20000)")
    parser.add_argument(
        "--drift-day", type=int, default=14, help="drift from this day of the window (0: none)"
    )
    parser.add_argument("--seed", type=int, default=None, help="simulator seed (default MLOPS_SEED)")
    parser.add_argument("--keep-up", action="store_true", help="leave Airflow running to explore the UI")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the pipeline")
    args = parser.parse_args(argv)
    demo = plan(
        args.days,
        args.rows_per_day,
        args.drift_day or None,
        settings().seed if args.seed is None else args.seed,
        dt.datetime.now(dt.UTC).date(),
    )
    return run_demo(demo, keep_up=args.keep_up, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
