"""
### materialize_features

Turns one validated day of transactions into features, offline and online.

* **Runs when**: the `lake_transactions` asset gets a partition (one run per day, with that
  day's partition key), so a backfill of `ingest_transactions` fans out here day by day.
* **wait_for_labels**: waits (rescheduled, no worker slot held) until the day's labels drop has
  been validated, landed or quarantined. The merchant fraud rates count the labels reported that
  day, so the snapshot is then a function of the day's data, not of which drop was validated
  first, and a rerun writes the same bytes. A quarantined labels drop does not hold the day up.
* **compute_features**: reads that day from the lake (plus small daily summaries of the
  previous 30 days, so the cost does not grow with history) and writes the customer and merchant
  feature snapshots for the end of the day, point-in-time correct, atomically.
* **materialize**: `store.materialize(start, end)` for exactly that day's snapshot interval into
  the Feast online store (never `materialize_incremental(now)`), then emits the `features` asset
  for the day. A rerun gives the same stores. It never registers the Feast definitions: they are
  deployed (`make feast-apply`; the local Airflow deploys them at start-up), and a registry that
  lacks them or holds others fails the task with what differs and that command.

Rerun one day: `POST /api/v2/dags/materialize_features/dagRuns` with
`{"logical_date": null, "partition_key": "YYYY-MM-DD"}`, or clear the task in the UI.
"""

from __future__ import annotations

from airflow.sdk import PartitionedAssetTimetable, dag, task

from include.mlops.core.settings import settings
from include.mlops.orchestration import START_DATE, dataset_asset, day_param, default_args, features_asset


@dag(
    schedule=PartitionedAssetTimetable(assets=dataset_asset("transactions")),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args("materialize_features"),
    params={"day": day_param("Day to compute")},
    tags=["mlops", "features", "feast"],
    doc_md=__doc__,
)
def materialize_features():
    @task.sensor(poke_interval=settings().sensor_poke_seconds, timeout=12 * 3600, mode="reschedule")
    def wait_for_labels(**context) -> bool:
        """Wait until the day's labels drop is validated: in the lake or quarantined."""
        from include.mlops.ingest.land import settled
        from include.mlops.orchestration import partition_day

        return settled("labels", partition_day(context)) is not None

    @task(pool="mlops_heavy")
    def compute_features(**context) -> dict:
        """Compute the day's customer and merchant feature snapshots from the lake."""
        from include.mlops.features import compute_features_for_day
        from include.mlops.orchestration import partition_day

        return compute_features_for_day(partition_day(context))

    @task(outlets=[features_asset()], pool="mlops_heavy")
    def materialize(**context) -> dict:
        """Load the day's snapshots into the online store for exactly that interval."""
        from include.mlops.features import materialize_day
        from include.mlops.orchestration import partition_day

        return materialize_day(partition_day(context))

    wait_for_labels() >> compute_features() >> materialize()


materialize_features()
