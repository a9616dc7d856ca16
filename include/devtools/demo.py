"""The main job on the embedded profile: ``make demo``.

Replays a few weeks of card payments through the whole pipeline under a real local Airflow
scheduler, as if the platform had been live through that history, in the order time gives
(:mod:`include.devtools.replay`):

1. **simulate** ``--days`` days ending yesterday into a staging folder, with drift from the
   ``--drift-day``-th day and a bad drop (negative amounts) on the first day;
2. **history**: the days up to the first model land (the ingestion DAGs, backfilled over the
   whole window, wait for each day) and fan out to ``materialize_features``; the bad drop is
   quarantined;
3. **first model**: ``train_model`` as of the last of those days, five fully labelled days behind
   it (labels arrive up to 5 days late), promoted if it passes the floors;
4. **day by day**: each day lands, is scored by the champion in force that day and monitored
   against that champion's reference; each night the weekly nightly run (``scheduled`` or
   ``backfill``) trains, and a drift retrain, requested on the first drifted day, waits until
   enough drifted days are labelled, then learns them and is judged against the champion.

At the end it prints a per-day table (champion, drift share against that champion's reference,
PR-AUC once labelled) and the decisions of every training, writes them as an HTML page with a
chart (served in the Airflow UI under "MLOps reports"), tells where everything is, and exits
non-zero if any stage failed. In a terminal a live table shows each day's progress.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import ClassVar

from include.devtools import demo_report, local_airflow, replay
from include.devtools.replay import PIPELINE, PRODUCERS
from include.mlops.core.settings import settings

FIRST_MODEL_LABELLED_DAYS = 5
"""Fully labelled days the first model learns from (training days plus one out-of-time day)."""
NIGHTLY_OFFSET_DAYS = 3
"""The first nightly training night comes this many days after the first model; then weekly."""


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
    nightly_nights: list[dt.date] = field(default_factory=list)

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

    @property
    def cron(self) -> str:
        """``MLOPS_TRAIN_CRON`` of the replay's Airflow: weekly on the nightly nights, or ``none``."""
        return replay.nightly_cron(self.nightly_nights[0]) if self.nightly_nights else "none"

    @property
    def cadence(self) -> str:
        """The nightly cadence in words, for the summary."""
        if not self.nightly_nights:
            return "nightly training switched off"
        nights = ", ".join(str(n) for n in self.nightly_nights)
        return f"the nightly training runs weekly in this replay, to keep time (nights {nights})"


def plan(
    days: int,
    rows_per_day: int,
    drift_day: int | None,
    seed: int,
    today: dt.date,
    first_training_day: int | None = None,
    nightly: bool = True,
    bad_day: int | None = 1,
) -> DemoPlan:
    """The demo's window: ``days`` days ending yesterday; drift from the ``drift_day``-th day.

    The first model is trained as of the first day with :data:`FIRST_MODEL_LABELLED_DAYS` fully
    labelled days behind it (or ``first_training_day``), before the drift. Nightly trainings run
    weekly from :data:`NIGHTLY_OFFSET_DAYS` after it. ``bad_day`` (1-based; ``None``: none) gets a
    bad transactions drop: day 1 by default, which no training window reads (the first
    training day needs the feature snapshot of the day before it).
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
    first_day = start + dt.timedelta(days=first - 1)
    end = start + dt.timedelta(days=days - 1)
    nights = []
    night = first_day + dt.timedelta(days=NIGHTLY_OFFSET_DAYS)
    while nightly and night <= end:
        nights.append(night)
        night += dt.timedelta(days=7)
    return DemoPlan(
        start,
        days,
        rows_per_day,
        drift_from,
        seed,
        first_day,
        labelled - oot,
        oot,
        bad_day=start + dt.timedelta(days=bad_day - 1) if bad_day else None,
        nightly_nights=nights,
    )


def _log(message: str) -> None:
    logging.getLogger("include.devtools.demo").info(message)


RUNTIME_FOLDERS = (
    "simulated",
    "landing",
    "lake",
    "quarantine",
    "reports",
    "feast",
    "mlflow",
    "airflow",
    "alerts",
)
"""What a replay leaves under ``MLOPS_HOME``: cleared before the next one, which replays the
same dates (a benchmark's results, for one, stay)."""


def fresh_home(home: os.PathLike) -> list[str]:
    """Remove the runtime state of an earlier replay under ``home``; returns what was removed."""
    import shutil
    from pathlib import Path

    removed = []
    for name in RUNTIME_FOLDERS:
        path = Path(home) / name
        if path.exists():
            shutil.rmtree(path)
            removed.append(name)
    return removed


def stage(demo: DemoPlan, staging_url: str, log=_log) -> None:
    """Simulate the plan's days into ``staging_url`` and spoil the bad day's transactions drop."""
    import pyarrow as pa

    from include.devtools.simulator import SimulationConfig, simulate, transactions_for_day, write_drop

    config = SimulationConfig(seed=demo.seed, rows_per_day=demo.rows_per_day, drift_from=demo.drift_from)
    simulate(demo.start, demo.days, config, staging_url, progress=lambda line: log(f"  {line}"))
    if demo.bad_day:
        # A processor's export bug: refunds written as negative amounts in an otherwise valid drop.
        table = transactions_for_day(demo.bad_day, config)
        amounts = table.column("amount").to_pylist()
        amounts[:25] = [-abs(a) - 1 for a in amounts[:25]]
        column = table.schema.get_field_index("amount")
        write_drop(
            staging_url, "transactions", demo.bad_day, table.set_column(column, "amount", pa.array(amounts))
        )


def failures(demo: DemoPlan, tracker: replay.Tracker) -> list[str]:
    """Runs that failed, except the deliberately bad day's ingestion."""
    bad = demo.bad_day.isoformat() if demo.bad_day else None
    out = []
    for dag_id in PIPELINE:
        for key, state in tracker.states(dag_id).items():
            if state == "failed" and not (key == bad and dag_id == "ingest_transactions"):
                out.append(f"{dag_id} {key}")
    return out


class LiveTable:
    """A live table of the replayed days in a terminal (``rich``): one row per day, one column per stage."""

    SYMBOLS: ClassVar[dict[str, str]] = {
        "success": "[green]ok[/]",
        "failed": "[red]failed[/]",
        "running": "[yellow]...[/]",
    }

    def __init__(self, demo: DemoPlan):
        from rich.console import Console
        from rich.live import Live

        self.demo = demo
        self.console = Console()
        self.live = Live(console=self.console, refresh_per_second=2, transient=False)
        self.live.start()

    def log(self, message: str) -> None:
        self.console.log(message)

    def __call__(self, tracker: replay.Tracker) -> None:
        from rich.table import Table

        table = Table(title="demo replay", expand=False)
        stages = [*PRODUCERS, "materialize_features", "score_transactions", "monitor_drift"]
        table.add_column("day")
        for name in ("transactions", "labels", "features", "scoring", "drift"):
            table.add_column(name)
        states = {d: tracker.states(d, self.demo.keys) for d in stages}
        for key in self.demo.keys:
            cells = [states[d].get(key, "") for d in stages]
            if any(cells):
                table.add_row(key, *(self.SYMBOLS.get(c, c) for c in cells))
        trainings = [
            f"{replay.training_as_of(r)} {r['state']}: {(r.get('conf') or {}).get('reason') or 'nightly'}"
            for r in tracker.trainings()
        ]
        if trainings:
            table.caption = "train_model: " + " | ".join(trainings[-4:])
        self.live.update(table)

    def stop(self) -> None:
        self.live.stop()


def summarize(demo: DemoPlan, tracker: replay.Tracker) -> str:
    """Print the text summary and write the HTML page; returns the page's path in the Airflow UI."""
    days = demo_report.day_rows(demo, tracker)
    trainings = demo_report.training_rows(tracker)
    page = demo_report.write_page(demo_report.html_page(demo, days, trainings, demo.cadence))
    print()
    print(demo_report.format_days(days))
    print()
    print(f"train_model runs ({demo.cadence}):")
    for line in demo_report.format_trainings(trainings).splitlines():
        print(f"  {line}")
    print()
    return page.url


def run_demo(demo: DemoPlan, keep_up: bool = False, timeout: float = 1800.0) -> int:
    from include.devtools.airflow_api import AirflowClient
    from include.mlops.orchestration import links

    s = settings()
    if local_airflow.running():
        _log("a local Airflow is already running: `make down` first (the demo starts its own)")
        return 2
    started = time.monotonic()
    removed = fresh_home(s.home)
    if removed:
        _log(f"cleared the previous replay's state under {s.home}: {', '.join(removed)}")
    staging = str(s.home / "simulated")
    _log(
        f"simulate: {demo.days} days {demo.start} .. {demo.end}, {demo.rows_per_day} rows/day, drift from "
        f"{demo.drift_from or 'never'}, bad drop on {demo.bad_day or 'no day'} -> {staging}"
    )
    stage(demo, staging)

    os.environ["MLOPS_TRAIN_CRON"] = demo.cron
    os.environ.setdefault("MLOPS_SENSOR_POKE_SECONDS", "2")
    _log(f"starting the local Airflow (nightly training: {demo.cron})")
    local_airflow.up()
    client = AirflowClient(local_airflow.base_url(), local_airflow.USER, local_airflow.password())
    live = LiveTable(demo) if sys.stdout.isatty() else None
    failed: list[str] = []
    try:
        try:
            tracker = replay.run_pipeline(
                demo,
                client,
                staging,
                s.landing_url,
                timeout=timeout,
                log=live.log if live else _log,
                progress=live,
            )
        finally:
            if live:
                live.stop()
        failed = failures(demo, tracker)
        page = summarize(demo, tracker)
        login = f"{local_airflow.USER} / {local_airflow.password()}"
        print(f"Summary page:  {local_airflow.base_url()}{links.ui_path(page)}  (also {page})")
        print(f"Lake:          {s.lake_url}")
        print(f"Quarantine:    {s.quarantine_url}")
        print(f"Reports:       {s.reports_url}  (Data Docs per day, drift reports per day)")
        print(f"Airflow UI:    {local_airflow.base_url()}  login {login}  (make demo ARGS=--keep-up)")
        print(
            f"MLflow UI:     {s.mlflow_ui_url}  (with --keep-up or make up; tracking {s.mlflow_tracking_uri})"
        )
    except (TimeoutError, RuntimeError) as exc:
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
    parser.add_argument("--days", type=int, default=25, help="days of history (default 25)")
    parser.add_argument("--rows-per-day", type=int, default=20_000, help="payments a day (default 20000)")
    parser.add_argument(
        "--drift-day", type=int, default=13, help="drift from this day of the window (0: none)"
    )
    parser.add_argument("--seed", type=int, default=None, help="simulator seed (default MLOPS_SEED)")
    parser.add_argument("--no-nightly", action="store_true", help="no nightly training runs")
    parser.add_argument("--keep-up", action="store_true", help="leave Airflow running to explore the UI")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the pipeline")
    args = parser.parse_args(argv)
    # The demo's own lines, plainly: Airflow's import replaces the root logger's format.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[demo %(asctime)s] %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("include.devtools")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    demo = plan(
        args.days,
        args.rows_per_day,
        args.drift_day or None,
        settings().seed if args.seed is None else args.seed,
        dt.datetime.now(dt.UTC).date(),
        nightly=not args.no_nightly,
    )
    return run_demo(demo, keep_up=args.keep_up, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
