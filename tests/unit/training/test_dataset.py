"""The labelled rows: each payment joined to its latest label, negatives down-sampled and weighted back,
OOT days sampled uniformly, every draw fixed by the payment's id and the seed."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pytest

from include.mlops import lake
from include.mlops.core.schema import LABEL
from include.mlops.training import (
    WEIGHT,
    TrainingDataError,
    Window,
    read_oot_days,
    read_training_days,
    stable_uniform,
)

if TYPE_CHECKING:
    import pandas as pd

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
    tiny_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.mlops import features
    from include.mlops.training import oot_frame

    days = [DAY, DAY + dt.timedelta(days=1)]
    for day in days:
        _write_day(tiny_settings, day)
    # The features are Feast's business (tests/integration): here the rows alone.
    monkeypatch.setattr(features, "with_features", lambda frame, settings=None: frame)
    monkeypatch.setenv("MLOPS_TRAIN_MAX_OOT_ROWS", str(PAYMENTS))

    frame, fingerprints = oot_frame(days[0], days[1], tiny_settings)
    trained_on = read_oot_days(
        days, days[1] + dt.timedelta(days=5), PAYMENTS, tiny_settings.seed, tiny_settings
    )
    assert frame["transaction_id"].tolist() == trained_on.frame["transaction_id"].tolist()
    assert len(frame) < 2 * PAYMENTS and fingerprints == trained_on.fingerprints
    whole, _ = oot_frame(days[0], days[1], tiny_settings, max_rows=10_000)
    assert len(whole) == 2 * PAYMENTS


def _without_feast(frame: pd.DataFrame, settings: Settings | None = None) -> pd.DataFrame:
    """The rows with every feature at 0: the features are Feast's business (tests/integration)."""
    from include.mlops import features

    return frame.assign(**dict.fromkeys(features.FEATURE_COLUMNS, 0.0))


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


def test_the_training_set_splits_fit_and_validation_rows_by_day(
    tiny_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.mlops import features
    from include.mlops.core.policies import TrainingSettings
    from include.mlops.training import build_dataset

    days = [DAY + dt.timedelta(days=i) for i in range(4)]
    for day in days:
        _write_day(tiny_settings, day)
    monkeypatch.setattr(features, "with_features", _without_feast)
    knobs = TrainingSettings(negatives_per_positive=1000, max_oot_rows=PAYMENTS // 2)

    data = build_dataset(_window(days, 1), knobs, tiny_settings)
    assert (int(data.in_fit.sum()), int(data.in_validation.sum())) == (2 * PAYMENTS, PAYMENTS)
    assert len(data.y_oot) < PAYMENTS, "the OOT cap is the knob's"
    assert list(data.x.columns) == list(features.FEATURE_COLUMNS) == list(data.columns)
    assert (data.x.dtypes == "float64").all() and (data.weight == 1.0).all()
    assert data.sampling["negatives_per_positive"] == 1000
    assert [d["day"] for d in data.sampling["training_days"]] == ["2026-03-01", "2026-03-02", "2026-03-03"]


def test_a_slice_without_fraud_stops_training_as_its_metrics_are_undefined(
    tiny_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.mlops import features
    from include.mlops.core.policies import TrainingSettings
    from include.mlops.training import build_dataset

    days = [DAY + dt.timedelta(days=i) for i in range(4)]
    for day in days:
        _write_day(tiny_settings, day, frauds=0 if day == days[2] else FRAUDS)
    monkeypatch.setattr(features, "with_features", _without_feast)

    with pytest.raises(
        TrainingDataError, match=r"no fraud among the \d+ labelled payments of the validation days"
    ):
        build_dataset(_window(days, 1), TrainingSettings(), tiny_settings)
    # With two validation days, the slice holds the frauds of 03-02.
    data = build_dataset(_window(days, 2), TrainingSettings(), tiny_settings)
    assert int(data.y[data.in_validation].sum()) == FRAUDS
