"""
### ingest_transactions

Lands one day of card transactions in the lake, gated by Great Expectations.

* **Schedule**: daily at 00:00 UTC for the day before (partition key `YYYY-MM-DD`). History is
  processed with a backfill from the UI (or `POST /api/v2/backfills`), one run per day.
* **wait_for_drop**: a deferrable sensor waits for `transactions/dt=DAY/_SUCCESS` in the
  landing zone (`MLOPS_LANDING_URL`, a folder or an `s3://` prefix).
* **Deadline**: a drop not landed `MLOPS_ALERT_DROP_DEADLINE_HOURS` (6) after the run is queued
  (06:00 UTC the day after, for the scheduled run) alerts the on-call channels; the sensor keeps
  waiting until its own timeout.
* **validate_and_land**: validates the drop with the suite derived from the schema, then writes
  `MLOPS_LAKE_URL/transactions/dt=DAY/` atomically (a rerun replaces the day) and emits the
  `lake_transactions` asset for that partition. A bad drop is quarantined with its report under
  `MLOPS_QUARANTINE_URL` and the task fails with what failed and where the report is; landing
  files are never touched.

Debug one day: `make airflow ARGS='dags test ingest_transactions 2026-01-05'`.
"""

from __future__ import annotations

from airflow.sdk import CronPartitionTimetable, dag, task

from include.mlops.orchestration import (
    START_DATE,
    dataset_asset,
    day_param,
    default_args,
    drop_deadline,
    landing_sensor,
)

DATASET = "transactions"


@dag(
    schedule=CronPartitionTimetable("0 0 * * *", timezone="UTC", run_offset=-1, key_format="%Y-%m-%d"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=4,
    default_args=default_args("ingest_transactions"),
    # A drop not landed by MLOPS_ALERT_DROP_DEADLINE_HOURS alerts; the sensor keeps waiting.
    deadline=drop_deadline(DATASET),
    params={"day": day_param("Day to ingest")},
    tags=["mlops", "ingestion", "great-expectations"],
    doc_md=__doc__,
)
def ingest_transactions():
    @task(outlets=[dataset_asset(DATASET)], pool="mlops_heavy")
    def validate_and_land(**context) -> dict:
        """Validate the day's drop and land it in the lake, or quarantine it."""
        from include.mlops.orchestration import land_day

        return land_day(DATASET, context)

    landing_sensor(DATASET) >> validate_and_land()


ingest_transactions()
