"""The steps of ``make bench``, one per process.

``python -m include.devtools.bench_stages STEP ROWS DAY [ARGS...]``

Each step prints one JSON line: what it measured (``seconds``: its own work, ``rows``) and the
process's peak RSS. See :mod:`include.devtools.bench` for what each stage and its floor are.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import resource
import sys
import time
from typing import TYPE_CHECKING, Any

from include.mlops.core.settings import settings

if TYPE_CHECKING:
    from collections.abc import Iterator

SEED = 7


def config(rows: int, rows_per_day: int | None = None) -> Any:
    """The world's simulator configuration: the customers and merchants of a ``rows``-row day."""
    from include.devtools.simulator import SimulationConfig

    return SimulationConfig(
        seed=SEED,
        rows_per_day=rows_per_day or rows,
        n_customers=max(200, rows // 8),
        n_merchants=max(50, rows // 40),
    )


@contextlib.contextmanager
def _timed(out: dict[str, Any], *warm: str) -> Iterator[None]:
    """Time the block into ``out["seconds"]``, after importing the stage's heavy libraries ``warm``:
    their import is task start-up, which the process wall time (``wall_seconds``) includes and
    ``seconds`` does not."""
    import importlib

    if "feast" in warm:
        from include.mlops.features import quiet_feast_import

        quiet_feast_import()
    for name in warm:
        importlib.import_module(name)
    started = time.perf_counter()
    yield
    out["seconds"] = time.perf_counter() - started


def lake_file(dataset: str, day: dt.date) -> str:
    from include.mlops import lake

    return lake.partition_file(dataset, day).url


def world(rows: int, day: dt.date, *args: str) -> dict:
    """The history before ``day`` (not measured): ``FIRST [HISTORY_ROWS [OLDER_ROWS OLDER_UNTIL]]``.

    Every day from ``FIRST`` gets about ``HISTORY_ROWS`` payments (default 3/5 of ``rows``: inside
    the ingestion's volume check, 0.5x-2x the median) of the population of a ``rows``-row day, and
    their labels; the days before ``OLDER_UNTIL`` keep an evenly spaced ``OLDER_ROWS`` of them (and
    only those payments' labels). Then every day's features, in order, and the Feast registry.
    """
    from include.devtools import simulator
    from include.mlops import features, lake
    from include.mlops.core.schema import LABELS, TRANSACTIONS

    first = dt.date.fromisoformat(args[0])
    history = int(args[1]) if len(args) > 1 else max(rows * 3 // 5, 1000)
    older = int(args[2]) if len(args) > 2 else history
    older_until = dt.date.fromisoformat(args[3]) if len(args) > 3 else first
    days = [first + dt.timedelta(days=n) for n in range((day - first).days)]
    # Straight into the lake, one generation a day (the simulator keeps the last five days' truth
    # for the labels); the drops' markers are no part of a lake partition.
    simulator.simulate(first, len(days), config(rows, history), settings().lake_url)
    for d in days:
        for dataset in (TRANSACTIONS.name, LABELS.name):
            lake.delete(lake.partition("lake", dataset, d).join(lake.SUCCESS_MARKER))
    older_days = [d for d in days if d < older_until]
    if older < history and older_days:
        _thin(older_days, older / history, days[-1])
    for d in days:
        features.compute_features_for_day(d)
    features.apply_definitions()
    return {"history_rows_per_day": history, "older_rows_per_day": older if older_days else history}


def _thin(older_days: list[dt.date], share: float, last: dt.date) -> None:
    """Keep an evenly spaced ``share`` of each older day's payments, and only their labels."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from include.mlops import lake
    from include.mlops.core.schema import LABELS, MAX_LABEL_DELAY_DAYS, TRANSACTIONS

    dropped: dict[dt.date, pa.Array] = {}
    for d in older_days:
        loc = lake.partition_file(TRANSACTIONS.name, d)
        table = lake.read_parquet(loc)
        keep = np.floor(np.arange(round(table.num_rows * share)) / share).astype(np.int64)
        gone = np.ones(table.num_rows, dtype=bool)
        gone[keep] = False
        dropped[d] = table.column("transaction_id").filter(pa.array(gone)).combine_chunks()
        lake.write_parquet(loc, table.take(pa.array(keep)))
    # The labels of a day's payments are reported over the five days after it.
    for d in sorted({p + dt.timedelta(days=k) for p in dropped for k in range(1, MAX_LABEL_DELAY_DAYS + 1)}):
        if d > last:
            continue
        ids = pa.concat_arrays([a for p, a in dropped.items() if 0 < (d - p).days <= MAX_LABEL_DELAY_DAYS])
        loc = lake.partition_file(LABELS.name, d)
        labels = lake.read_parquet(loc)
        lake.write_parquet(loc, labels.filter(pc.invert(pc.is_in(labels["transaction_id"], value_set=ids))))


def simulate(rows: int, day: dt.date, *args: str) -> dict:
    """Generate the day and write its drop to the landing zone."""
    out: dict[str, Any] = {}
    from include.devtools.simulator import transactions_for_day, write_drop

    with _timed(out):
        table = transactions_for_day(day, config(rows))
        write_drop(settings().landing_url, "transactions", day, table)
    out["rows"] = table.num_rows
    return out


def simulate_labels(rows: int, day: dt.date, *args: str) -> dict:
    """Generate the day's labels and write their drop (the scheduler chain validates both drops)."""
    from include.devtools.simulator import labels_for_day, write_drop

    table = labels_for_day(day, config(rows))
    write_drop(settings().landing_url, "labels", day, table)
    return {"rows": table.num_rows}


def simulate_floor(rows: int, day: dt.date, *args: str) -> dict:
    """Write the same table as parquet."""
    out: dict[str, Any] = {}
    import pyarrow.parquet as pq

    from include.devtools.simulator import transactions_for_day

    table = transactions_for_day(day, config(rows))
    with _timed(out):
        pq.write_table(table, "/dev/null")
    out["rows"] = table.num_rows
    return out


def ingest(rows: int, day: dt.date, *args: str) -> dict:
    """Validate the drop with GX and land it in the lake."""
    out: dict[str, Any] = {}
    from include.mlops.ingest.land import ingest_day

    with _timed(out, "great_expectations"):
        out["rows"] = ingest_day("transactions", day).rows
    return out


def ingest_floor(rows: int, day: dt.date, *args: str) -> dict:
    """Read and write the same parquet."""
    out: dict[str, Any] = {}

    import pyarrow.parquet as pq

    from include.mlops import lake

    path = lake.data_files(lake.partition("landing", "transactions", day))[0].path
    with _timed(out):
        table = pq.read_table(path)
        pq.write_table(table, "/dev/null", compression="zstd")
    out["rows"] = table.num_rows
    return out


def features(rows: int, day: dt.date, *args: str) -> dict:
    """Compute the day's feature snapshots."""
    out: dict[str, Any] = {}
    from include.mlops.features import compute_features_for_day

    with _timed(out, "duckdb", "pandas"):
        result = compute_features_for_day(day)
    out["rows"] = result["transactions"]
    out["snapshot_rows"] = result["rows"]
    return out


def features_floor(rows: int, day: dt.date, *args: str) -> dict:
    """DuckDB: read the day, one GROUP BY customer, write it as parquet."""
    out: dict[str, Any] = {}
    import tempfile

    import duckdb

    con = duckdb.connect()
    source = f"read_parquet('{lake_file('transactions', day)}')"
    query = f"SELECT customer_id, count(*) AS n, sum(amount) AS total FROM {source} GROUP BY customer_id"
    with _timed(out), tempfile.TemporaryDirectory() as tmp:
        con.execute(f"COPY ({query}) TO '{tmp}/out.parquet' (FORMAT parquet)")
    out["rows"] = con.execute(f"SELECT count(*) FROM {source}").fetchone()[0]
    return out


def materialize(rows: int, day: dt.date, *args: str) -> dict:
    """Load the day's snapshots into the SQLite online store through Feast."""
    out: dict[str, Any] = {}
    from include.mlops.features import materialize_day

    with _timed(out, "feast"):
        result = materialize_day(day)
    out["rows"] = sum(result["rows"].values())
    return out


def materialize_floor(rows: int, day: dt.date, *args: str) -> dict:
    """One wide ``executemany`` INSERT of the same snapshot rows into a fresh SQLite file."""
    out: dict[str, Any] = {}
    import sqlite3
    import tempfile

    import pyarrow.parquet as pq

    from include.mlops.features import snapshot_location

    tables = {
        v: pq.read_table((loc := snapshot_location(v, day)).path, filesystem=loc.fs)
        for v in ("customer", "merchant")
    }
    with _timed(out), tempfile.TemporaryDirectory() as tmp:
        con = sqlite3.connect(f"{tmp}/floor.db")
        for view, table in tables.items():
            names = [f'"{n}"' for n in table.column_names]
            con.execute(f"CREATE TABLE {view} ({', '.join(names)})")
            values = zip(*(c.to_pylist() for c in table.columns), strict=True)
            con.executemany(f"INSERT INTO {view} VALUES ({', '.join('?' * len(names))})", values)
        con.commit()
        con.close()
    out["rows"] = sum(table.num_rows for table in tables.values())
    out["layout_seconds"] = _feast_layout_upserts(tables)
    return out


def _feast_layout_upserts(
    tables: dict[str, Any], batch_entities: int = 10_000, per_statement: int = 50
) -> float:
    """Seconds SQLite alone takes to write the snapshot rows as the stage does, in the layout
    Feast's online store reads: one row per feature value, keyed by Feast's serialized entity key,
    under ``PRIMARY KEY (entity_key, feature_name)`` and the ``entity_key`` index, upserted by
    multi-row statements, a transaction per ``batch_entities`` entities, over a table that already
    holds the same keys (the day before's rows, as the world's online store does). The rows are
    built, and the table filled, before the batches are timed: the floor of any store stock Feast
    can read."""
    import sqlite3
    import tempfile

    seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        con = sqlite3.connect(f"{tmp}/layout.db")
        for view, table in tables.items():
            con.execute(
                f"CREATE TABLE {view} (entity_key BLOB, feature_name TEXT, value BLOB, value_text TEXT, "
                "vector_value BLOB, event_ts timestamp, created_ts timestamp, "
                "PRIMARY KEY(entity_key, feature_name))"
            )
            con.execute(f"CREATE INDEX {view}_ek ON {view} (entity_key)")
            upsert = (
                f"INSERT INTO {view} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
                "VALUES {} ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
                "value_text = excluded.value_text, event_ts = excluded.event_ts, "
                "created_ts = excluded.created_ts"
            )
            many, one = (upsert.format(", ".join(["(?, ?, ?, ?, ?, ?)"] * n)) for n in (per_statement, 1))
            with con:  # the day before's rows of the same keys
                for groups, rest in _layout_batches(table, batch_entities, per_statement):
                    con.executemany(many, groups)
                    con.executemany(one, rest)
            for groups, rest in _layout_batches(table, batch_entities, per_statement):
                started = time.perf_counter()
                with con:
                    con.executemany(many, groups)
                    con.executemany(one, rest)
                seconds += time.perf_counter() - started
        con.close()
    return seconds


def _layout_batches(table: Any, batch_entities: int, per_statement: int) -> Iterator[tuple[list, list]]:
    """The snapshot rows of ``table`` as Feast's SQLite store lays them out (Feast's serialized
    entity key, feature name, value bytes and text, timestamps), ``batch_entities`` entities a
    batch, built as they are asked for: the parameters of its ``per_statement``-row statements and
    its last rows."""
    import itertools
    import struct

    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key, *features = [n for n in table.column_names if n != "event_timestamp"]
    for start in range(0, table.num_rows, batch_entities):
        part = table.slice(start, batch_entities)
        columns = [part.column(name).to_pylist() for name in features]
        keys = [
            serialize_entity_key(
                EntityKey(join_keys=[key], entity_values=[Value(string_val=str(k))]),
                entity_key_serialization_version=3,
            )
            for k in part.column(key).to_pylist()
        ]
        rows = [
            (k, name, struct.pack("<d", v) if isinstance(v, float) else str(v).encode(), str(v), 1, None)
            for i, k in enumerate(keys)
            for name, v in zip(features, (c[i] for c in columns), strict=True)
        ]
        whole = len(rows) - len(rows) % per_statement
        groups = [
            tuple(itertools.chain.from_iterable(rows[j : j + per_statement]))
            for j in range(0, whole, per_statement)
        ]
        yield groups, rows[whole:]


def training(rows: int, day: dt.date, *args: str) -> dict:
    """Train, log and register a model; alias it champion for the next stages."""
    out: dict[str, Any] = {}
    from include.mlops import registry
    from include.mlops.training import EARLY_STOPPING_ROUNDS, train

    as_of, window, oot = dt.date.fromisoformat(args[0]), int(args[1]), int(args[2])
    with _timed(out, "feast", "mlflow", "xgboost", "sklearn.linear_model"):
        result = train(as_of, window, oot, "benchmark", None)
    m = result["metrics"]
    out["rows"] = int(m["window_rows_total"] + m["oot_rows_total"])
    out["fit_rows"] = int(m["train_rows"])
    out["rounds"] = int(m["best_iteration"]) + 1 + EARLY_STOPPING_ROUNDS
    out["features"] = len(registry.feature_columns(result["model_uri"]))
    out["pr_auc"] = m["pr_auc"]
    # The bench's champion for the scoring and drift stages.
    client = registry.configure_mlflow()
    client.set_registered_model_alias(settings().model_name, "champion", str(result["version"]))
    client.delete_registered_model_alias(settings().model_name, "challenger")
    return out


def training_floor(rows: int, day: dt.date, *args: str) -> dict:
    """``xgboost.train`` on a random matrix of the same shape, rounds and parameters."""
    out: dict[str, Any] = {}
    import numpy as np
    import xgboost as xgb

    from include.mlops.core.policies import TrainingSettings
    from include.mlops.training import xgb_params

    fit_rows, rounds, n_features = int(args[0]), int(args[1]), int(args[2])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(fit_rows, n_features)).astype(np.float32)
    y = (x[:, 0] + rng.normal(size=fit_rows) > 1.5).astype(np.float32)
    params = {
        k: v
        for k, v in xgb_params("cpu", 0, threads=TrainingSettings.from_env().threads).items()
        if k not in ("n_estimators", "early_stopping_rounds")
    }
    params["nthread"] = params.pop("n_jobs")
    params["seed"] = params.pop("random_state")
    with _timed(out):
        xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=rounds)
    out["rows"] = fit_rows
    return out


def scoring(rows: int, day: dt.date, *args: str) -> dict:
    """Score the day with the champion."""
    out: dict[str, Any] = {}
    from include.mlops.scoring import score_day

    with _timed(out, "feast", "mlflow", "xgboost"):
        out["rows"] = score_day(day)["rows"]
    return out


def scoring_floor(rows: int, day: dt.date, *args: str) -> dict:
    """Read the day and the snapshots before it, join them with Arrow, write one score per row."""
    out: dict[str, Any] = {}
    import tempfile

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.mlops.features import snapshot_location

    with _timed(out):
        payments = pq.read_table(lake_file("transactions", day))
        before = day - dt.timedelta(days=1)
        for view, key in (("customer", "customer_id"), ("merchant", "merchant_id")):
            loc = snapshot_location(view, before)
            snap = pq.read_table(loc.path, filesystem=loc.fs).drop_columns(["event_timestamp"])
            payments = payments.join(snap, key, join_type="left outer", right_suffix=f"_{view}")
        scores = pa.table(
            {"transaction_id": payments["transaction_id"], "score": np.zeros(payments.num_rows)}
        )
        with tempfile.TemporaryDirectory() as tmp:
            pq.write_table(scores, f"{tmp}/scores.parquet")
    out["rows"] = payments.num_rows
    return out


def drift(rows: int, day: dt.date, *args: str) -> dict:
    """Check the day's drift against the champion's reference (Evidently)."""
    out: dict[str, Any] = {}
    from include.mlops.monitoring import monitor_day

    with _timed(out, "evidently", "mlflow"):
        result = monitor_day(day)
    out["rows"] = result["rows"]
    out["sampled_rows"] = result["sampled_rows"]
    return out


def drift_floor(rows: int, day: dt.date, *args: str) -> dict:
    """Decile PSI with numpy over the same columns and sample, against 5,000 reference rows."""
    out: dict[str, Any] = {}
    import numpy as np
    import pyarrow.parquet as pq

    from include.mlops import lake
    from include.mlops.core.policies import DriftPolicy
    from include.mlops.core.schema import SCORE_CHAMPION

    path = lake_file(lake.PREDICTIONS, day)
    policy = DriftPolicy.from_env()
    names = set(pq.read_schema(path).names)
    columns = [c for c in (*policy.features, SCORE_CHAMPION) if c in names]
    with _timed(out):
        table = pq.read_table(path, columns=columns)
        reference = table.slice(0, 5000)
        keep = np.random.default_rng(0).choice(
            table.num_rows, size=min(policy.sample_rows, table.num_rows), replace=False
        )
        psi = {}
        for name in columns:
            values = table[name].to_numpy(zero_copy_only=False).astype(np.float64)[keep]
            ref = reference[name].to_numpy(zero_copy_only=False).astype(np.float64)
            edges = np.unique(np.nanquantile(ref, np.linspace(0, 1, 11)))
            if len(edges) < 2:
                continue
            r = np.histogram(ref, edges)[0] / len(ref) + 1e-4
            c = np.histogram(values, edges)[0] / len(values) + 1e-4
            psi[name] = float(np.sum((c - r) * np.log(c / r)))
    out["rows"] = table.num_rows
    out["columns"] = len(psi)
    return out


STEPS = {
    fn.__name__: fn
    for fn in (
        world,
        simulate,
        simulate_labels,
        simulate_floor,
        ingest,
        ingest_floor,
        features,
        features_floor,
        materialize,
        materialize_floor,
        training,
        training_floor,
        scoring,
        scoring_floor,
        drift,
        drift_floor,
    )
}


def main(argv: list[str]) -> int:
    step, rows, day, *args = argv
    out = STEPS[step](int(rows), dt.date.fromisoformat(day), *args)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
