"""The main job on the embedded profile: ``make demo``.

Simulates a few weeks of days into the landing zone (the last of them yesterday, as if the
platform went live today with that history), starts the local Airflow, unpauses the pipeline and
backfills the history through the REST API, then lets the scheduler do the work. It prints
progress while it runs and a per-day summary at the end, and exits non-zero if any run failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from dataclasses import dataclass

from include.mlops import local_airflow
from include.mlops.settings import settings

# The DAGs the demo drives, in pipeline order. Producers are backfilled; consumers follow their
# assets under the scheduler.
PRODUCERS = ("ingest_transactions", "ingest_labels")
TERMINAL = {"success", "failed"}


@dataclass
class DemoPlan:
    start: dt.date
    days: int
    rows_per_day: int
    drift_from: dt.date | None
    seed: int

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days - 1)

    @property
    def keys(self) -> list[str]:
        return [(self.start + dt.timedelta(days=i)).isoformat() for i in range(self.days)]


def plan(days: int, rows_per_day: int, drift_day: int | None, seed: int, today: dt.date) -> DemoPlan:
    """The demo's window: ``days`` days ending yesterday, drift from the ``drift_day``-th day."""
    start = today - dt.timedelta(days=days)
    drift_from = start + dt.timedelta(days=drift_day - 1) if drift_day else None
    return DemoPlan(start, days, rows_per_day, drift_from, seed)


def _log(message: str) -> None:
    print(f"[demo {dt.datetime.now():%H:%M:%S}] {message}", flush=True)


def run_states(client, dag_ids, keys) -> dict[tuple[str, str], str]:
    """The state of the latest run of each (DAG, partition key) in the window."""
    states: dict[tuple[str, str], str] = {}
    wanted = set(keys)
    for dag_id in dag_ids:
        for run in client.dag_runs(dag_id):
            key = run.get("partition_key")
            if key in wanted:
                states[(dag_id, key)] = run["state"]
    return states


def lake_rows(dataset: str, day: str) -> int | None:
    """Rows of a lake partition, read from the parquet footer; None when there is no partition."""
    import pyarrow.parquet as pq

    from include.mlops import storage

    loc = storage.location(f"{settings().lake_url}/{dataset}/dt={day}")
    files = [f for f in storage.list_files(loc) if f.path.endswith(".parquet")]
    if not files:
        return None
    total = 0
    for f in files:
        with f.fs.open_input_file(f.path) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def summary_table(demo: DemoPlan, states: dict[tuple[str, str], str]) -> str:
    header = (
        f"{'day':<11} {'drift':<5} {'transactions':>12} {'ingest_txn':<10} {'labels':>8} {'ingest_lbl':<10}"
    )
    lines = [header, "-" * len(header)]
    for key in demo.keys:
        drifted = bool(demo.drift_from and key >= demo.drift_from.isoformat())
        txn_rows = lake_rows("transactions", key)
        lbl_rows = lake_rows("labels", key)
        lines.append(
            f"{key:<11} {'yes' if drifted else '':<5} {txn_rows if txn_rows is not None else '-':>12} "
            f"{states.get(('ingest_transactions', key), 'missing'):<10} "
            f"{lbl_rows if lbl_rows is not None else '-':>8} "
            f"{states.get(('ingest_labels', key), 'missing'):<10}"
        )
    return "\n".join(lines)


def run_demo(demo: DemoPlan, keep_up: bool = False, timeout: float = 1800.0) -> int:
    from include.mlops.airflow_api import AirflowClient
    from include.mlops.simulator import SimulationConfig, simulate

    s = settings()
    _log(
        f"simulating {demo.days} days {demo.start} .. {demo.end}, {demo.rows_per_day} rows/day, "
        f"drift from {demo.drift_from or 'never'} -> {s.landing_url}"
    )
    config = SimulationConfig(seed=demo.seed, rows_per_day=demo.rows_per_day, drift_from=demo.drift_from)
    simulate(demo.start, demo.days, config, s.landing_url, progress=lambda line: _log(f"  {line}"))

    started_here = not local_airflow.running()
    _log("starting the local Airflow" if started_here else "using the running local Airflow")
    local_airflow.up()
    client = AirflowClient(local_airflow.base_url(), local_airflow.USER, local_airflow.password())
    failed = False
    try:
        deadline = time.monotonic() + 120
        while not set(PRODUCERS) <= set(client.dag_ids()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"DAGs not parsed; import errors: {client.import_errors()}")
            time.sleep(2)
        for dag_id in PRODUCERS:
            client.unpause(dag_id)  # schedules the latest day: yesterday, the demo's last day
            if demo.days > 1:
                client.backfill(
                    dag_id, f"{demo.start}T00:00:00Z", f"{demo.end - dt.timedelta(days=1)}T00:00:00Z"
                )
            _log(f"unpaused {dag_id} and backfilled {demo.start} .. {demo.end}")

        seen: dict[tuple[str, str], str] = {}
        deadline = time.monotonic() + timeout
        expected = {(d, k) for d in PRODUCERS for k in demo.keys}
        while True:
            states = run_states(client, PRODUCERS, demo.keys)
            for item, state in sorted(states.items(), key=lambda kv: (kv[0][1], kv[0][0])):
                if state in TERMINAL and seen.get(item) != state:
                    _log(f"{item[1]} {item[0]}: {state}")
                seen[item] = state
            done = [i for i in expected if states.get(i) in TERMINAL]
            if len(done) == len(expected):
                break
            if time.monotonic() > deadline:
                _log(f"timed out with {len(expected) - len(done)} runs unfinished")
                failed = True
                break
            time.sleep(5)
        failed = failed or any(state == "failed" for state in states.values())
        print()
        print(summary_table(demo, states))
        print()
        print(f"Lake:        {s.lake_url}")
        print(f"Quarantine:  {s.quarantine_url}")
        print(f"Reports:     {s.reports_url}  (Great Expectations Data Docs per day)")
        print(
            f"Airflow UI:  {local_airflow.base_url()}  "
            f"login {local_airflow.USER} / {local_airflow.password()}"
        )
    finally:
        if keep_up:
            _log("Airflow keeps running (--keep-up); `make down` stops it")
        elif started_here:
            local_airflow.down()
            _log("stopped the local Airflow")
    _log("FAILED: some runs failed, see the table above" if failed else "all runs succeeded")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo ARGS=...", description=__doc__)
    parser.add_argument("--days", type=int, default=21, help="days of history (default 21)")
    parser.add_argument("--rows-per-day", type=int, default=20_000)
    parser.add_argument(
        "--drift-day", type=int, default=14, help="drift from this day of the window (0: none)"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep-up", action="store_true", help="leave Airflow running to explore the UI")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the runs")
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
