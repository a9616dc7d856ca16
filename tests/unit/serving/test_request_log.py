"""The request log: batched, atomic, uniquely named files per payment day; losses warn, never raise.

Also shadow scoring's merge of both models' scores, on plain scoring functions.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from include.mlops import lake, registry
from include.mlops.core.schema import (
    CHALLENGER_VERSION,
    CHAMPION_VERSION,
    NO_CHALLENGER,
    SCORE_CHALLENGER,
    SCORE_CHAMPION,
)
from include.mlops.core.settings import load_settings
from include.mlops.features import FEATURE_COLUMNS
from include.mlops.serving import (
    FRAUD_PROBABILITY,
    LATENCY_MS,
    LOG_SCHEMA,
    MODEL_VERSION,
    RECEIVED_AT,
    SERVED_BY,
    ModelSet,
    RequestLog,
    ScoredBatch,
    ServingModel,
    ShadowScorer,
    freshness_column,
    log_table,
    read_request_log,
    request_log_days,
    request_log_partition,
    shadow_scores,
)

if TYPE_CHECKING:
    from pathlib import Path

    from include.mlops.core.settings import Settings

DAY = dt.date(2026, 1, 20)


def _model(version: int, factor: float, threshold: float | None = 0.5) -> ServingModel:
    def score(frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(frame["amount"], dtype="float64") * factor

    return ServingModel(version, f"models:/card_fraud/{version}", ("amount",), threshold, score)


def _batch(
    days: list[dt.date], models: ModelSet, served: list[str] | None = None, tag: str = "a"
) -> ScoredBatch:
    n = len(days)
    frame = pd.DataFrame(
        {
            "transaction_id": [f"{tag}-{i}" for i in range(n)],
            "customer_id": [f"c{i}" for i in range(n)],
            "merchant_id": ["m1"] * n,
            "event_timestamp": pd.DatetimeIndex(
                [dt.datetime.combine(d, dt.time(12), tzinfo=dt.UTC) for d in days]
            ),
            "amount": [0.1 * (i + 1) for i in range(n)],
            "country": ["DE"] * n,
            "channel": ["pos"] * n,
            "card_present": [True] * n,
            "currency": [None] * n,
            "merchant_category": ["grocery"] * n,
            **{name: np.arange(n, dtype="float64") for name in FEATURE_COLUMNS},
        }
    )
    served = served or [registry.CHAMPION] * n
    probability = [models.model(s).scorer(frame.iloc[[i]])[0] for i, s in enumerate(served)]
    answers = {
        SERVED_BY: served,
        MODEL_VERSION: [models.model(s).version for s in served],
        FRAUD_PROBABILITY: probability,
        "decision": [models.model(s).decide(p) for s, p in zip(served, probability, strict=True)],
        "threshold": [models.model(s).threshold for s in served],
        LATENCY_MS: [1.5] * n,
        RECEIVED_AT: [dt.datetime(2026, 1, 20, 12, 0, 1, tzinfo=dt.UTC)] * n,
        freshness_column("customer"): [dt.datetime(2026, 1, 20, tzinfo=dt.UTC)] * (n - 1) + [None],
        freshness_column("merchant"): [dt.datetime(2026, 1, 20, tzinfo=dt.UTC)] * n,
    }
    return ScoredBatch(frame, answers, models)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({"MLOPS_HOME": str(tmp_path / "home")})


def _until(condition, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds:.0f} s for {what}"
        time.sleep(0.02)


def test_each_flush_writes_a_new_file_per_payment_day(settings: Settings) -> None:
    models = ModelSet(_model(1, 0.1))
    nxt = DAY + dt.timedelta(days=1)
    for tag, days in (("a", [DAY, DAY, nxt]), ("b", [DAY, DAY])):
        log = RequestLog(capacity=100, batch_rows=1000, flush_seconds=3600, settings=settings)
        log.start()
        assert log.offer(_batch(days, models, tag=tag))
        log.stop()
        assert log.dropped == 0 and log.written_rows == len(days)
    assert request_log_days(settings) == [DAY, nxt]
    files = lake.data_files(request_log_partition(DAY, settings))
    assert len(files) == 2 and len({f.name for f in files}) == 2
    assert all(f.name.startswith("part-") and f.name.endswith(".parquet") for f in files)
    table = read_request_log(DAY, settings)
    assert table.schema.equals(LOG_SCHEMA)
    assert sorted(table.column("transaction_id").to_pylist()) == ["a-0", "a-1", "b-0", "b-1"]
    assert read_request_log(nxt, settings).column("transaction_id").to_pylist() == ["a-2"]
    # Nothing but whole data files in the partition: no temporary file of a write is left.
    assert lake.list_entries(request_log_partition(DAY, settings)) == sorted(f.name for f in files)


def test_without_shadow_each_model_has_the_scores_it_served() -> None:
    models = ModelSet(_model(1, 0.1), _model(2, 0.2))
    served = [registry.CHAMPION, registry.CHALLENGER, registry.CHAMPION]
    table = log_table([_batch([DAY] * 3, models, served)]).to_pandas()
    assert table[SCORE_CHAMPION].tolist()[0] == pytest.approx(0.01)
    assert math.isnan(table[SCORE_CHAMPION][1]) and math.isnan(table[SCORE_CHALLENGER][0])
    assert table[SCORE_CHALLENGER][1] == pytest.approx(0.04)
    assert set(table[CHAMPION_VERSION]) == {1} and set(table[CHALLENGER_VERSION]) == {2}
    alone = log_table([_batch([DAY], ModelSet(_model(1, 0.1)))]).to_pandas()
    assert alone[CHALLENGER_VERSION].tolist() == [NO_CHALLENGER]


def test_batches_of_different_model_sets_keep_their_own_versions() -> None:
    before, after = ModelSet(_model(1, 0.1)), ModelSet(_model(2, 0.2), _model(1, 0.1))
    table = log_table([_batch([DAY] * 2, before, tag="a"), _batch([DAY] * 3, after, tag="b")]).to_pandas()
    assert table["transaction_id"].tolist() == ["a-0", "a-1", "b-0", "b-1", "b-2"]
    assert table[CHAMPION_VERSION].tolist() == [1, 1, 2, 2, 2]
    assert table[CHALLENGER_VERSION].tolist() == [NO_CHALLENGER] * 2 + [1] * 3
    assert table[MODEL_VERSION].tolist() == [1, 1, 2, 2, 2]


def test_shadow_scoring_fills_in_the_model_that_did_not_serve() -> None:
    models = ModelSet(_model(1, 0.1), _model(2, 0.2))
    served = [registry.CHAMPION, registry.CHALLENGER, registry.CHAMPION, registry.CHALLENGER]
    batch = _batch([DAY] * 4, models, served)
    batch.scores = shadow_scores(batch)
    amounts = batch.frame["amount"].to_numpy()
    assert np.allclose(batch.scores[SCORE_CHAMPION], amounts * 0.1)
    assert np.allclose(batch.scores[SCORE_CHALLENGER], amounts * 0.2)
    table = log_table([batch]).to_pandas()
    assert np.allclose(table[SCORE_CHALLENGER], amounts * 0.2)
    assert table["decision"].tolist() == ["pass"] * 4
    assert table[freshness_column("customer")].isna().tolist() == [False, False, False, True]


def test_shadow_scoring_scores_what_queued_together_and_forwards_it() -> None:
    models = ModelSet(_model(1, 0.1), _model(2, 0.2))
    forwarded: list[ScoredBatch] = []
    shadow = ShadowScorer(capacity=100, forward=forwarded.append)
    shadow.handle_all([_batch([DAY] * 2, models, tag="a"), _batch([DAY] * 3, models, tag="b")])
    (merged,) = forwarded
    assert merged.frame["transaction_id"].tolist() == ["a-0", "a-1", "b-0", "b-1", "b-2"]
    assert np.allclose(merged.scores[SCORE_CHALLENGER], merged.frame["amount"].to_numpy() * 0.2)
    assert shadow.scored_rows == 5


def test_the_log_flushes_when_enough_rows_wait(settings: Settings) -> None:
    log = RequestLog(capacity=100, batch_rows=4, flush_seconds=3600, settings=settings)
    log.start()
    try:
        log.offer(_batch([DAY] * 2, ModelSet(_model(1, 0.1)), tag="a"))
        log.offer(_batch([DAY] * 2, ModelSet(_model(1, 0.1)), tag="b"))
        _until(lambda: log.written_rows == 4, "the log to flush four rows")
    finally:
        log.stop()
    assert len(log.files) == 1


def test_a_full_queue_drops_records_with_a_warning_and_never_blocks(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    log = RequestLog(capacity=3, batch_rows=1000, flush_seconds=3600, settings=settings)
    with caplog.at_level(logging.WARNING):
        assert log.offer(_batch([DAY] * 2, ModelSet(_model(1, 0.1))))
        assert not log.offer(_batch([DAY] * 2, ModelSet(_model(1, 0.1))))
    assert log.dropped == 2
    assert "request log: 2 rows lost: its queue is full (3 rows)" in caplog.text


def test_a_failed_write_loses_its_rows_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the lake should be")
    settings = load_settings({"MLOPS_HOME": str(tmp_path / "home"), "MLOPS_LAKE_URL": str(blocker / "lake")})
    log = RequestLog(capacity=100, batch_rows=1000, flush_seconds=3600, settings=settings)
    log.start()
    with caplog.at_level(logging.WARNING):
        assert log.offer(_batch([DAY] * 3, ModelSet(_model(1, 0.1))))
        log.stop()
    assert log.dropped == 3 and log.written_rows == 0
    assert f"writing the request log of {DAY} failed" in caplog.text


def test_appended_file_names_are_unique_and_sort_by_time(tmp_path: Path) -> None:
    folder = lake.location(str(tmp_path / "partition"))
    early = dt.datetime(2026, 1, 20, 8, 0, tzinfo=dt.UTC)
    names = [lake.new_data_file(folder, early + dt.timedelta(microseconds=i)).name for i in range(500)]
    assert len(set(names)) == 500 and names == sorted(names)
    assert len({lake.new_data_file(folder, early).name for _ in range(500)}) == 500
    for name in names[:3]:
        lake.write_bytes(folder.join(name), b"x")
    assert [f.name for f in lake.data_files(folder)] == names[:3]
