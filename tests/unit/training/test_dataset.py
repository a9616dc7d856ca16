"""The labelled rows: each payment joined to its latest label, negatives down-sampled and weighted back,
OOT days sampled uniformly, every draw fixed by the payment's id and the seed; and the training set
built from them with its features read chunk by chunk."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from include.mlops import lake
from include.mlops.core.schema import LABEL
from include.mlops.features import FEATURE_COLUMNS
from include.mlops.training import (
    WEIGHT,
    TrainingDataError,
    Window,
    read_oot_days,
    read_training_days,
    stable_uniform,
)
from tests.unit.training.conftest import fake_feature_values, id_number

if TYPE_CHECKING:
    from include.mlops.core.settings import Settings

DAY = dt.date(2026, 3, 1)
LABELS_UNTIL = DAY + dt.timedelta(days=8)
PAYMENTS = 200
FRAUDS = 10  # the first ten payments of a day


def _ids(day: dt.date, n: int = PAYMENTS) -> list[str]:
    return [f"t{day:%Y%m%d}-{i:04d}" for i in range(n)]


def _noon(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)


def _labels(ids: list[str], frauds: set[str], day: dt.date) -> pa.Table:
    return pa.table(
        {
            "transaction_id": pa.array(ids, pa.string()),
            LABEL: pa.array([int(i in frauds) for i in ids], pa.int8()),
            "reported_at": pa.array([_noon(day)] * len(ids), pa.timestamp("us", tz="UTC")),
        }
    )


def _write(s: Settings, dataset: str, day: dt.date, table: pa.Table) -> None:
    lake.write_parquet(lake.partition_at(lake.root("lake", s), dataset, day).join(lake.DATA_FILE), table)


def _write_day(
    s: Settings,
    day: dt.date,
    ids: list[str] | None = None,
    label_day: dt.date | None = None,
    frauds: int = FRAUDS,
) -> None:
    """``day``'s payments (at noon), all labelled in the labels partition of ``label_day`` (default:
    the next day); the first ``frauds`` of them are frauds."""
    ids = _ids(day) if ids is None else ids
    payments = {
        "transaction_id": pa.array(ids, pa.string()),
        "event_timestamp": pa.array([_noon(day)] * len(ids), pa.timestamp("us", tz="UTC")),
        "amount": pa.array([id_number(i) for i in ids], pa.float64()),
    }
    _write(s, "transactions", day, pa.table(payments))
    label_day = label_day or day + dt.timedelta(days=1)
    _write(s, "labels", label_day, _labels(ids, set(_ids(day)[:frauds]), label_day))


def test_stable_uniform_depends_on_the_id_and_the_seed_not_on_the_row_order() -> None:
    ids = _ids(DAY, 10_000)
    draw = stable_uniform(pa.array(ids), 7)
    shuffled = np.random.default_rng(0).permutation(len(ids))
    again = stable_uniform(pa.array([ids[i] for i in shuffled]), 7)
    assert np.array_equal(again, draw[shuffled])
    assert ((draw >= 0) & (draw < 1)).all()
    assert abs(draw.mean() - 0.5) < 0.02, "uniform on [0, 1)"
    assert not np.array_equal(stable_uniform(pa.array(ids), 8), draw), "another seed, another draw"


def test_stable_uniform_is_pinned_so_reruns_across_releases_sample_the_same_rows() -> None:
    # pandas' SipHash of the UTF-8 bytes under the seed's key: these values were drawn before the
    # ids were converted with ``to_numpy`` instead of ``to_pandas``, and must never move.
    ids = pa.chunked_array([["t20260206-0000001", "t20260206-0000002"], ["pay-é-ü-€", ""]])
    expected = [0.9325187186422403, 0.7423538682686479, 0.5527400722935646, 0.5874662180982286]
    assert stable_uniform(ids, 7).tolist() == expected


def test_a_payment_reported_twice_keeps_its_latest_label(tiny_settings: Settings) -> None:
    _write_day(tiny_settings, DAY)
    # A legitimate payment settled on 03-02 is charged back on 03-04.
    twice = _ids(DAY)[42]
    chargeback = DAY + dt.timedelta(days=3)
    _write(tiny_settings, "labels", chargeback, _labels([twice], {twice}, chargeback))

    data = read_training_days([DAY], LABELS_UNTIL, 1000, 7, tiny_settings)
    frame = data.frame
    assert frame["transaction_id"].is_unique and len(frame) == PAYMENTS
    assert frame.loc[frame["transaction_id"] == twice, LABEL].tolist() == [1]
    assert data.stats["duplicate_labels"] == 1
    assert frame[LABEL].sum() == FRAUDS + 1


def test_a_payment_without_a_label_is_an_error_that_names_it(tiny_settings: Settings) -> None:
    ids = _ids(DAY)
    _write(tiny_settings, "transactions", DAY, pa.table({"transaction_id": pa.array(ids, pa.string())}))
    lost, late = ids[17], ids[18]
    labelled = [i for i in ids if i not in (lost, late)]
    _write(tiny_settings, "labels", DAY + dt.timedelta(days=1), _labels(labelled, set(), DAY))
    # A label later than the five days of label delay does not count.
    _write(tiny_settings, "labels", DAY + dt.timedelta(days=6), _labels([late], {late}, DAY))
    next_day = DAY + dt.timedelta(days=1)
    _write_day(tiny_settings, next_day, label_day=next_day + dt.timedelta(days=2))

    with pytest.raises(TrainingDataError, match=f"2026-03-01: 2 payments \\(e.g. {lost}, {late}\\)") as error:
        read_training_days([DAY, next_day], LABELS_UNTIL, 20, 7, tiny_settings)
    message = str(error.value)
    assert "2026-03-02" not in message.split("under")[1], "the other day is fully labelled"
    assert "labelled within 5 days: check the labels feed before training" in message


def test_negatives_are_down_sampled_and_weighted_back_frauds_kept_whole(tiny_settings: Settings) -> None:
    _write_day(tiny_settings, DAY)
    data = read_training_days([DAY], LABELS_UNTIL, 4, 7, tiny_settings)
    frame = data.frame
    (day_stats,) = data.stats["per_day"]
    negatives = PAYMENTS - FRAUDS
    assert day_stats == {
        "day": "2026-03-01",
        "rows": PAYMENTS,
        "positives": FRAUDS,
        "keep_rate": 4 * FRAUDS / negatives,
    }
    frauds, kept = frame[frame[LABEL] == 1], frame[frame[LABEL] == 0]
    assert len(frauds) == FRAUDS and (frauds[WEIGHT] == 1).all()
    assert 0 < len(kept) < negatives
    assert np.allclose(kept[WEIGHT], negatives / (4 * FRAUDS))
    assert data.stats | {"per_day": None} == {
        "rows_total": PAYMENTS,
        "negatives_total": negatives,
        "rows_kept": len(frame),
        "duplicate_labels": 0,
        "per_day": None,
    }


def test_max_rows_caps_the_rows_kept_per_day(tiny_settings: Settings) -> None:
    _write_day(tiny_settings, DAY)
    data = read_training_days([DAY], LABELS_UNTIL, 20, 7, tiny_settings, max_rows=40)
    (day_stats,) = data.stats["per_day"]
    # 40 rows for the day: every fraud, and negatives kept at (40 - 10) / 190.
    assert day_stats["keep_rate"] == pytest.approx(30 / (PAYMENTS - FRAUDS))
    assert (data.frame[LABEL] == 1).sum() == FRAUDS


def test_the_sample_is_the_same_whatever_the_order_of_the_rows(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from include.mlops.core.settings import load_settings

    kept = []
    for order in (1, -1):
        s = load_settings({"MLOPS_HOME": str(tmp_path_factory.mktemp("home"))})
        _write_day(s, DAY, ids=_ids(DAY)[::order])
        kept.append(set(read_training_days([DAY], LABELS_UNTIL, 4, 7, s).frame["transaction_id"]))
    assert kept[0] == kept[1]


def test_oot_days_are_untouched_below_the_cap_and_sampled_alike_above(tiny_settings: Settings) -> None:
    days = [DAY, DAY + dt.timedelta(days=1)]
    for day in days:
        _write_day(tiny_settings, day)

    whole = read_oot_days(days, LABELS_UNTIL, 10_000, 7, tiny_settings)
    assert len(whole.frame) == whole.stats["rows_total"] == 2 * PAYMENTS
    assert WEIGHT not in whole.frame.columns, "OOT rows are never re-weighted"

    sampled = read_oot_days(days, LABELS_UNTIL, PAYMENTS, 7, tiny_settings)
    assert [d["share"] for d in sampled.stats["per_day"]] == [0.5, 0.5]
    assert all(60 < d["rows_kept"] < 140 for d in sampled.stats["per_day"])
    assert sampled.stats["rows_kept"] == len(sampled.frame) < 2 * PAYMENTS
    again = read_oot_days(days, LABELS_UNTIL, PAYMENTS, 7, tiny_settings)
    assert again.frame["transaction_id"].tolist() == sampled.frame["transaction_id"].tolist()


def test_every_file_read_is_fingerprinted_once(tiny_settings: Settings) -> None:
    days = [DAY, DAY + dt.timedelta(days=1)]
    for day in days:
        _write_day(tiny_settings, day)
    data = read_training_days(days, LABELS_UNTIL, 20, 7, tiny_settings)
    read = [(p["dataset"], p["day"]) for p in data.fingerprints]
    # Both days' transactions, and the labels partitions 03-02 and 03-03, each once.
    assert sorted(read) == [
        ("labels", "2026-03-02"),
        ("labels", "2026-03-03"),
        ("transactions", "2026-03-01"),
        ("transactions", "2026-03-02"),
    ]
    assert {p["rows"] for p in data.fingerprints} == {PAYMENTS}


def test_promotion_rebuilds_the_oot_rows_with_the_training_cap_and_seed(
    tiny_settings: Settings, monkeypatch: pytest.MonkeyPatch, fake_feast: list[int]
) -> None:
    from include.mlops.training import oot_frame

    days = [DAY, DAY + dt.timedelta(days=1)]
    for day in days:
        _write_day(tiny_settings, day)
    monkeypatch.setenv("MLOPS_TRAIN_MAX_OOT_ROWS", str(PAYMENTS))

    frame, fingerprints = oot_frame(days[0], days[1], replace(tiny_settings, chunk_rows=50))
    trained_on = read_oot_days(
        days, days[1] + dt.timedelta(days=5), PAYMENTS, tiny_settings.seed, tiny_settings
    )
    assert frame["transaction_id"].tolist() == trained_on.frame["transaction_id"].tolist()
    assert len(frame) < 2 * PAYMENTS and fingerprints == trained_on.fingerprints
    assert fake_feast == [50] * (len(frame) // 50) + ([len(frame) % 50] if len(frame) % 50 else [])
    assert frame.index.equals(pd.RangeIndex(len(frame))), "the chunks are put back in one piece"
    assert frame[FEATURE_COLUMNS[0]].tolist() == [id_number(i) for i in frame["transaction_id"]]
    whole, _ = oot_frame(days[0], days[1], tiny_settings, max_rows=10_000)
    assert len(whole) == 2 * PAYMENTS


def _window(days: list[dt.date], validation_days: int) -> Window:
    """A window whose last day is the OOT day and whose validation slice is ``validation_days`` long."""
    train_end = days[-2]
    return Window(
        as_of=LABELS_UNTIL,
        latest_labels=LABELS_UNTIL,
        labelled_through=days[-1],
        train_start=days[0],
        train_end=train_end,
        validation_start=train_end - dt.timedelta(days=validation_days - 1),
        oot_start=days[-1],
        oot_end=days[-1],
    )


def _features_of(ids: pd.Series | list[str]) -> np.ndarray:
    """The fake features of the payments ``ids`` as the model sees them (float64, then float32)."""
    return pd.DataFrame(fake_feature_values(id_number(i) for i in ids)).to_numpy().astype(np.float32)


def test_the_training_set_splits_fit_and_validation_rows_by_day(
    tiny_settings: Settings, fake_feast: list[int]
) -> None:
    from include.mlops.core.policies import TrainingSettings
    from include.mlops.training import build_dataset

    days = [DAY + dt.timedelta(days=i) for i in range(4)]
    for day in days:
        _write_day(tiny_settings, day)
    knobs = TrainingSettings(negatives_per_positive=1000, max_oot_rows=PAYMENTS // 2)

    data = build_dataset(_window(days, 1), knobs, tiny_settings)
    assert (len(data.fit), len(data.validation)) == (2 * PAYMENTS, PAYMENTS)
    assert len(data.y_oot) < PAYMENTS, "the OOT cap is the knob's"
    assert data.columns == FEATURE_COLUMNS == tuple(data.x_oot.columns)
    assert data.fit.x.dtype == np.float32 and (data.fit.weight == 1.0).all()
    assert data.out_of_time.weight is None, "OOT rows are never re-weighted"
    assert data.sampling["negatives_per_positive"] == 1000
    assert [d["day"] for d in data.sampling["training_days"]] == ["2026-03-01", "2026-03-02", "2026-03-03"]
    # Each row's features are its own payment's, and the frames logged carry them beside the rows.
    train_ids = data.train.frame["transaction_id"]
    assert np.array_equal(np.concatenate([data.fit.x, data.validation.x]), _features_of(train_ids))
    assert np.array_equal(data.out_of_time.x, _features_of(data.oot.frame["transaction_id"]))
    assert np.shares_memory(data.train.frame[FEATURE_COLUMNS[0]].to_numpy(), data.fit.x), "views, no copy"
    assert data.train.frame["transaction_id"].str[1:9].eq("20260303").tolist() == [False] * 400 + [True] * 200


def test_the_streamed_training_set_holds_the_rows_of_the_reading_functions_whatever_the_chunks(
    tiny_settings: Settings, fake_feast: list[int]
) -> None:
    from include.mlops.core.policies import TrainingSettings
    from include.mlops.training import build_dataset, reference_positions

    days = [DAY + dt.timedelta(days=i) for i in range(4)]
    for day in days:
        _write_day(tiny_settings, day)
    knobs = TrainingSettings(negatives_per_positive=4)
    window = _window(days, 1)

    data = build_dataset(window, knobs, replace(tiny_settings, chunk_rows=37))
    assert max(fake_feast) == 37 and len(fake_feast) > 4, "read chunk by chunk"
    fake_feast.clear()
    whole = build_dataset(window, knobs, replace(tiny_settings, chunk_rows=100_000))
    assert len(fake_feast) == 2, "one chunk per set"
    for part in ("fit", "validation", "out_of_time"):
        chunked, one = getattr(data, part), getattr(whole, part)
        assert np.array_equal(chunked.x, one.x) and np.array_equal(chunked.y, one.y), part
        assert chunked.batch_rows == 37 and len(list(chunked.batches())) == -(-len(chunked) // 37)
    assert data.reference.equals(whole.reference)

    # The rows, labels and weights are those the reading functions return in memory.
    read = read_training_days(window.train_days, LABELS_UNTIL, 4, tiny_settings.seed, tiny_settings)
    frame = data.train.frame
    assert frame["transaction_id"].tolist() == read.frame["transaction_id"].tolist()
    assert np.array_equal(np.concatenate([data.fit.y, data.validation.y]), read.frame[LABEL].to_numpy())
    weights = np.concatenate([data.fit.weight, data.validation.weight])
    assert np.array_equal(weights, read.frame[WEIGHT].to_numpy())
    oot = read_oot_days(window.oot_days, LABELS_UNTIL, knobs.max_oot_rows, tiny_settings.seed, tiny_settings)
    assert data.oot.frame["transaction_id"].tolist() == oot.frame["transaction_id"].tolist()
    # The drift reference: the OOT rows of the seed's draw, with Python-string ids.
    picked = reference_positions(len(oot.frame), tiny_settings.seed)
    assert np.array_equal(data.reference.index.to_numpy(), picked)
    assert data.reference["transaction_id"].tolist() == oot.frame["transaction_id"].iloc[picked].tolist()
    assert data.reference["transaction_id"].dtype == object
    assert list(data.reference.columns) == ["transaction_id", "event_timestamp", *FEATURE_COLUMNS]


def test_payments_of_the_validation_days_go_after_the_fit_payments_whatever_their_partition(
    tiny_settings: Settings, fake_feast: list[int]
) -> None:
    from include.mlops.core.policies import TrainingSettings
    from include.mlops.training import build_dataset

    days = [DAY + dt.timedelta(days=i) for i in range(4)]
    for day in days[1:]:
        _write_day(tiny_settings, day)
    # A payment of the validation day (03-03) filed in the partition of 03-01.
    ids = _ids(days[0])
    stamps = [_noon(days[0])] * (PAYMENTS - 1) + [_noon(days[2])]
    payments = pa.table(
        {
            "transaction_id": ids,
            "event_timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            "amount": [id_number(i) for i in ids],
        }
    )
    _write(tiny_settings, "transactions", days[0], payments)
    _write(tiny_settings, "labels", days[1], _labels(ids, set(ids[:FRAUDS]), days[1]))

    data = build_dataset(_window(days, 1), TrainingSettings(negatives_per_positive=1000), tiny_settings)
    order = data.train.frame["transaction_id"].tolist()
    assert (len(data.fit), len(data.validation)) == (2 * PAYMENTS - 1, PAYMENTS + 1)
    assert order[: len(data.fit)] == ids[:-1] + _ids(days[1])
    assert order[len(data.fit) :] == [ids[-1], *_ids(days[2])]
    assert np.array_equal(data.validation.x, _features_of(order[len(data.fit) :]))


def test_a_slice_without_fraud_stops_training_before_any_feature_is_read(
    tiny_settings: Settings, fake_feast: list[int]
) -> None:
    from include.mlops.core.policies import TrainingSettings
    from include.mlops.training import build_dataset

    days = [DAY + dt.timedelta(days=i) for i in range(4)]
    for day in days:
        _write_day(tiny_settings, day, frauds=0 if day == days[2] else FRAUDS)

    with pytest.raises(
        TrainingDataError, match=r"no fraud among the \d+ labelled payments of the validation days"
    ):
        build_dataset(_window(days, 1), TrainingSettings(), tiny_settings)
    assert fake_feast == [], "the metrics are known to be undefined before Feast is asked"
    # With two validation days, the slice holds the frauds of 03-02.
    data = build_dataset(_window(days, 2), TrainingSettings(), tiny_settings)
    assert int(data.validation.y.sum()) == FRAUDS
