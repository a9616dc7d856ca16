"""The simulator: deterministic, schema-true drops with recognisable fraud, label delays and drift."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from include.devtools import simulator
from include.devtools.simulator import (
    SimulationConfig,
    fraud_flags_for_day,
    labels_for_day,
    simulate,
    transactions_for_day,
    truth_for_day,
    write_drop,
)
from include.mlops import lake
from include.mlops.core.schema import (
    CHANNELS,
    COUNTRIES,
    COUNTRY_CURRENCY,
    LABELS,
    MAX_AMOUNT,
    MAX_LABEL_DELAY_DAYS,
    MERCHANT_CATEGORIES,
    TRANSACTIONS,
)

if TYPE_CHECKING:
    import pandas as pd

START = dt.date(2026, 1, 5)  # a Monday
WEEK = [START + dt.timedelta(days=i) for i in range(7)]
CONFIG = SimulationConfig(seed=11, rows_per_day=5000)
DRIFT_FROM = dt.date(2026, 1, 19)
DRIFT_CONFIG = SimulationConfig(seed=11, rows_per_day=5000, drift_from=DRIFT_FROM)
DAY_US = 86_400 * 1_000_000


def _frame(day: dt.date, config: SimulationConfig) -> pd.DataFrame:
    """A day's payments joined with their hidden truth."""
    df = transactions_for_day(day, config).to_pandas()
    truth = truth_for_day(day, config).to_pandas()[["transaction_id", "is_fraud", "fraud_pattern"]]
    out = df.merge(truth, on="transaction_id", how="left", validate="one_to_one")
    out["day"] = day
    return out


@pytest.fixture(scope="module")
def week() -> pd.DataFrame:
    import pandas as pd

    return pd.concat([_frame(day, CONFIG) for day in WEEK], ignore_index=True)


@pytest.fixture(scope="module")
def home_country(week: pd.DataFrame) -> pd.Series:
    """A customer's home, as an observer sees it: the country of most of their legitimate payments."""
    legit = week[week.is_fraud == 0]
    return legit.groupby("customer_id").country.agg(lambda c: c.value_counts().index[0])


# --------------------------------------------------------------------------------------------------
# Determinism


def _drop_bytes(root: Path, day: dt.date, config: SimulationConfig) -> tuple[bytes, bytes]:
    simulator._population.cache_clear()
    txn = write_drop(str(root), "transactions", day, transactions_for_day(day, config))
    lbl = write_drop(str(root), "labels", day, labels_for_day(day, config))
    return (
        lake.read_bytes(lake.location(txn).join("part-00000.parquet")),
        lake.read_bytes(lake.location(lbl).join("part-00000.parquet")),
    )


def test_the_same_seed_writes_the_same_bytes_and_another_seed_other_data(tmp_path: Path) -> None:
    day = WEEK[3]
    first = _drop_bytes(tmp_path / "a", day, CONFIG)
    second = _drop_bytes(tmp_path / "b", day, CONFIG)
    other = _drop_bytes(tmp_path / "c", day, SimulationConfig(seed=12, rows_per_day=5000))
    assert first == second
    assert first[0] != other[0] and first[1] != other[1]

    a = transactions_for_day(day, CONFIG)
    b = transactions_for_day(day, SimulationConfig(seed=12, rows_per_day=5000))
    shared = min(a.num_rows, b.num_rows)
    assert not a.column("amount").slice(0, shared).equals(b.column("amount").slice(0, shared))
    assert a.column("customer_id").to_pylist() != b.column("customer_id").to_pylist()[: a.num_rows]


def test_the_population_does_not_depend_on_the_day(week: pd.DataFrame) -> None:
    legit = week[week.is_fraud == 0]
    per_merchant = legit.groupby("merchant_id")[["merchant_category", "country", "channel"]].nunique()
    assert (per_merchant == 1).all().all(), "a merchant changed category, country or channel"
    assert legit.customer_id.nunique() <= CONFIG.customers
    assert legit.merchant_id.nunique() <= CONFIG.merchants
    # The same people come back: most of Monday's customers pay again later in the week.
    monday = set(legit[legit.day == WEEK[0]].customer_id)
    later = set(legit[legit.day != WEEK[0]].customer_id)
    assert len(monday & later) / len(monday) > 0.8
    # Habits: a customer's payments concentrate on a few merchants.
    top_share = legit.groupby("customer_id").merchant_id.agg(lambda m: m.value_counts(normalize=True).iloc[0])
    assert top_share[legit.groupby("customer_id").size() >= 10].median() > 0.25


def test_a_card_is_issued_in_its_holders_home_country(week: pd.DataFrame) -> None:
    per_customer = week.groupby("customer_id").card_country.nunique()
    assert (per_customer == 1).all(), "a customer's cards came from two countries"
    assert set(week.card_country) <= set(COUNTRIES) and week.card_country.nunique() >= 8
    # Payments abroad and cross-border online: the card's country is not the merchant's.
    assert 0.05 < (week.card_country != week.country).mean() < 0.5


# --------------------------------------------------------------------------------------------------
# Contract


def test_every_day_holds_the_transactions_contract(week: pd.DataFrame) -> None:
    for day in WEEK[:2]:
        table = transactions_for_day(day, CONFIG)
        assert table.schema.equals(TRANSACTIONS.arrow_schema)
        assert table.column_names == TRANSACTIONS.names
        ts = table.column("event_timestamp").cast(pa.int64()).to_numpy()
        assert (np.diff(ts) >= 0).all(), "not sorted by event_timestamp"
        assert table.column("transaction_id")[0].as_py() == f"t{day:%Y%m%d}-0000001"

    assert week.transaction_id.is_unique
    start = week.day.map(lambda d: dt.datetime.combine(d, dt.time(), tzinfo=dt.UTC))
    assert (week.event_timestamp >= start).all()
    assert (week.event_timestamp < start + dt.timedelta(days=1)).all()
    at_midnight = (week.event_timestamp == start) | (
        week.event_timestamp.dt.time == dt.time(23, 59, 59, 999999)
    )
    assert at_midnight.sum() <= 2, "times piled up at the day's edges"
    assert week.amount.between(0, MAX_AMOUNT).all()
    assert (week.amount > 0).all()
    assert set(week.country) <= set(COUNTRIES)
    assert set(week.merchant_category) <= set(MERCHANT_CATEGORIES)
    assert set(week.channel) == set(CHANNELS)
    assert (week.currency == week.country.map(COUNTRY_CURRENCY)).all()
    assert (week.card_present == (week.channel != "online")).all()
    assert ((week.channel == "atm") == (week.merchant_category == "cash_withdrawal")).all()
    assert (week[week.merchant_category == "digital_goods"].channel == "online").all()
    assert not week.isna().drop(columns=["fraud_pattern"]).any().any()


def test_volume_follows_the_week_and_the_clock(week: pd.DataFrame) -> None:
    per_day = week.groupby("day").size()
    assert per_day.between(0.8 * CONFIG.rows_per_day, 1.2 * CONFIG.rows_per_day).all()
    weekend = per_day[[WEEK[4], WEEK[5]]].mean()  # Friday, Saturday
    midweek = per_day[[WEEK[0], WEEK[1], WEEK[2]]].mean()
    assert weekend > 1.1 * midweek

    hours = week[week.is_fraud == 0].event_timestamp.dt.hour
    night = hours.between(1, 4).mean() / 4
    evening = hours.between(17, 19).mean() / 3
    assert evening > 8 * night


# --------------------------------------------------------------------------------------------------
# Fraud


def test_fraud_rate_and_all_three_patterns_over_a_week(week: pd.DataFrame) -> None:
    rate = week.is_fraud.mean()
    assert 0.001 <= rate <= 0.01, rate
    shares = week[week.is_fraud == 1].fraud_pattern.value_counts(normalize=True)
    assert set(shares.index) == set(simulator.FRAUD_PATTERNS)
    assert (shares > 0.1).all(), shares.to_dict()
    assert (week.fraud_pattern.notna() == (week.is_fraud == 1)).all()


def test_card_testing_is_bursts_of_small_online_payments(week: pd.DataFrame) -> None:
    testing = week[week.fraud_pattern == "card_testing"]
    assert (testing.amount < 5).all()
    assert (testing.channel == "online").all()
    assert (testing.merchant_category == "digital_goods").mean() > 0.5
    bursts = testing.groupby(["day", "customer_id"]).event_timestamp.agg(["size", "min", "max"])
    assert (bursts["size"] >= 3).mean() > 0.9
    assert ((bursts["max"] - bursts["min"]) < dt.timedelta(minutes=30)).mean() > 0.9
    legit_small_online = week[(week.is_fraud == 0) & (week.amount < 5) & (week.channel == "online")]
    assert len(legit_small_online) / (week.is_fraud == 0).sum() < 0.03


def test_account_takeover_is_large_foreign_and_nightly_at_new_merchants(
    week: pd.DataFrame, home_country: pd.Series
) -> None:
    legit = week[week.is_fraud == 0]
    takeover = week[week.fraud_pattern == "account_takeover"]
    level = legit.groupby("customer_id").amount.median()
    relative = takeover.amount / takeover.customer_id.map(level)
    foreign = takeover.country != takeover.customer_id.map(home_country)
    assert set(takeover.merchant_category) <= {"electronics", "travel"}
    assert foreign.mean() > 0.85
    assert (takeover.event_timestamp.dt.hour < 6).mean() > 0.5
    assert relative.median() > 5
    used = set(zip(legit.customer_id, legit.merchant_id, strict=True))
    known = [(c, m) in used for c, m in zip(takeover.customer_id, takeover.merchant_id, strict=True)]
    assert np.mean(known) < 0.15
    # Legitimate traffic does not look like that.
    legit_foreign = legit.country != legit.customer_id.map(home_country)
    assert legit_foreign.mean() < 0.2
    assert (legit.event_timestamp.dt.hour < 6).mean() < 0.1


def test_a_compromised_merchant_stands_out_on_some_days(week: pd.DataFrame) -> None:
    days = 0
    for day, df in week.groupby("day"):
        hit = df[df.fraud_pattern == "compromised_merchant"]
        if hit.empty:
            continue
        days += 1
        assert hit.merchant_id.nunique() == 1
        assert (hit.channel == "pos").all()
        # Among the shops with some traffic that day, it is the one with far more fraud than the rest.
        shops = df[df.channel == "pos"].groupby("merchant_id").is_fraud.agg(["mean", "size"])
        shops = shops[shops["size"] >= 20]
        merchant = hit.merchant_id.iloc[0]
        assert shops.loc[merchant, "mean"] >= 0.25, day
        assert shops.drop(index=merchant)["mean"].max() < shops.loc[merchant, "mean"] - 0.1, day
    assert 2 <= days <= 3


# --------------------------------------------------------------------------------------------------
# Labels


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], list[str]]:
    root = tmp_path_factory.mktemp("landing")
    lines: list[str] = []
    summary = simulate(START, 7 + MAX_LABEL_DELAY_DAYS, CONFIG, str(root), progress=lines.append)
    return root, summary, lines


def _read_drop(root: Path, dataset: str, day: dt.date) -> pa.Table:
    return pq.read_table(root / dataset / f"dt={day.isoformat()}" / "part-00000.parquet")


def test_simulate_writes_both_drops_and_summarises_each_day(
    simulated: tuple[Path, list[dict], list[str]], week: pd.DataFrame
) -> None:
    root, summary, lines = simulated
    assert [s["day"] for s in summary] == [(START + dt.timedelta(days=i)).isoformat() for i in range(12)]
    assert len(lines) == 12 and lines[0].startswith(START.isoformat())
    for row in summary[:7]:
        day = dt.date.fromisoformat(row["day"])
        landed = _read_drop(root, "transactions", day)
        assert landed.equals(transactions_for_day(day, CONFIG))
        assert row["transactions"] == landed.num_rows
        assert row["fraud"] == int(week[week.day == day].is_fraud.sum())
        assert row["labels"] == _read_drop(root, "labels", day).num_rows
        assert row["drifted"] is False
        for dataset in ("transactions", "labels"):
            names = sorted(p.name for p in (root / dataset / f"dt={day.isoformat()}").iterdir())
            assert names == ["_SUCCESS", "part-00000.parquet"]
    # The cached loop gives exactly what a standalone call gives.
    late = START + dt.timedelta(days=9)
    assert _read_drop(root, "labels", late).equals(labels_for_day(late, CONFIG))


def test_every_payment_is_labelled_once_within_the_delay(
    simulated: tuple[Path, list[dict], list[str]],
) -> None:
    root, summary, _ = simulated
    import pandas as pd

    drops = []
    for row in summary:
        day = dt.date.fromisoformat(row["day"])
        labels = _read_drop(root, "labels", day)
        assert labels.schema.equals(LABELS.arrow_schema)
        reported = labels.column("reported_at").cast(pa.int64()).to_numpy()
        start_us = (day - dt.date(1970, 1, 1)).days * DAY_US
        assert ((reported >= start_us) & (reported < start_us + DAY_US)).all(), day
        assert (np.diff(reported) >= 0).all()
        frame = labels.to_pandas()
        frame["drop_day"] = day
        drops.append(frame)
    labels = pd.concat(drops, ignore_index=True)
    assert labels.transaction_id.is_unique

    delays = []
    for day in WEEK:
        flags = fraud_flags_for_day(day, CONFIG).to_pandas()
        got = flags.merge(labels, on="transaction_id", how="left", suffixes=("", "_label"))
        assert got.is_fraud_label.notna().all(), f"unlabelled payments of {day}"
        assert (got.is_fraud == got.is_fraud_label).all()
        delay = got.drop_day.map(lambda d, day=day: (d - day).days)
        assert delay.between(1, MAX_LABEL_DELAY_DAYS).all()
        assert (got.reported_at > got.event_timestamp).all()
        legit = got[got.is_fraud == 0]
        assert ((legit.reported_at - legit.event_timestamp) == dt.timedelta(days=3)).all()
        delays.extend(delay[got.is_fraud == 1])
    chargeback = pd.Series(delays).value_counts(normalize=True)
    assert chargeback.reindex([2, 3]).sum() > 0.5
    assert set(chargeback.index) <= set(range(1, MAX_LABEL_DELAY_DAYS + 1))


def test_fraud_flags_agree_with_the_truth_and_the_day() -> None:
    day = WEEK[4]
    flags = fraud_flags_for_day(day, CONFIG)
    table = transactions_for_day(day, CONFIG)
    assert flags.column_names == ["transaction_id", "is_fraud", "event_timestamp"]
    assert flags.schema.field("is_fraud").type == pa.int8()
    assert flags.column("transaction_id").equals(table.column("transaction_id"))
    assert flags.column("event_timestamp").equals(table.column("event_timestamp"))
    truth = truth_for_day(day, CONFIG)
    assert flags.column("is_fraud").equals(truth.column("is_fraud"))


# --------------------------------------------------------------------------------------------------
# Drift


def test_drift_moves_channel_amounts_and_the_takeover_pattern_only_from_its_day() -> None:
    import pandas as pd

    before_days = [DRIFT_FROM - dt.timedelta(days=i) for i in range(1, 8)]
    after_days = [DRIFT_FROM + dt.timedelta(days=i) for i in range(7)]
    for day in before_days[:2]:
        assert transactions_for_day(day, DRIFT_CONFIG).equals(transactions_for_day(day, CONFIG))

    before = pd.concat([_frame(d, DRIFT_CONFIG) for d in before_days], ignore_index=True)
    after = pd.concat([_frame(d, DRIFT_CONFIG) for d in after_days], ignore_index=True)
    undrifted = pd.concat([_frame(d, CONFIG) for d in after_days], ignore_index=True)
    legit_before, legit_after = before[before.is_fraud == 0], after[after.is_fraud == 0]
    legit_undrifted = undrifted[undrifted.is_fraud == 0]

    online = {
        name: (frame.channel == "online").mean()
        for name, frame in (("before", legit_before), ("after", legit_after), ("undrifted", legit_undrifted))
    }
    assert online["after"] - online["before"] > 0.15, online
    assert abs(online["undrifted"] - online["before"]) < 0.03, online
    assert legit_after.amount.mean() > 1.25 * legit_before.amount.mean()
    assert legit_undrifted.amount.mean() < 1.1 * legit_before.amount.mean()

    home = legit_before.groupby("customer_id").country.agg(lambda c: c.value_counts().index[0])
    old = before[before.fraud_pattern == "account_takeover"]
    new = after[after.fraud_pattern == "account_takeover"]
    new = new[new.customer_id.isin(home.index)]
    assert len(new) > 20
    assert (old.country != old.customer_id.map(home)).mean() > 0.85
    assert (new.country == new.customer_id.map(home)).mean() > 0.85
    assert (new.event_timestamp.dt.hour.between(9, 21)).all()
    assert not set(new.merchant_category) & {"electronics", "travel"}
    assert new.amount.median() < old.amount.median() / 3
    assert DRIFT_CONFIG.drifted(DRIFT_FROM) and not DRIFT_CONFIG.drifted(before_days[0])


# --------------------------------------------------------------------------------------------------
# Drops


def test_write_drop_writes_the_marker_last_and_replaces_a_previous_drop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = WEEK[0]
    table = transactions_for_day(day, CONFIG)
    folder = tmp_path / "transactions" / f"dt={day.isoformat()}"
    (folder).mkdir(parents=True)
    (folder / "part-00001.parquet").write_bytes(b"stale")

    url = write_drop(str(tmp_path), "transactions", day, table)
    assert url == str(folder)
    data, marker = folder / "part-00000.parquet", folder / "_SUCCESS"
    assert sorted(p.name for p in folder.iterdir()) == ["_SUCCESS", "part-00000.parquet"]
    assert marker.read_bytes() == b""
    assert marker.stat().st_mtime_ns >= data.stat().st_mtime_ns
    assert pq.read_table(data).equals(table)

    operations: list[tuple[str, str]] = []
    real_write, real_delete = lake.write_bytes, lake.delete

    def write(loc: lake.Location, payload: bytes) -> None:
        operations.append(("write", loc.path.rsplit("/", 1)[-1]))
        real_write(loc, payload)

    def delete(loc: lake.Location) -> None:
        operations.append(("delete", loc.path.rsplit("/", 1)[-1]))
        real_delete(loc)

    monkeypatch.setattr(lake, "write_bytes", write)
    monkeypatch.setattr(lake, "delete", delete)
    write_drop(str(tmp_path), "transactions", day, table, fmt="csv")
    assert operations[0] == ("delete", "_SUCCESS")
    assert operations[-2:] == [("write", "part-00000.csv"), ("write", "_SUCCESS")]
    assert sorted(p.name for p in folder.iterdir()) == ["_SUCCESS", "part-00000.csv"]

    with pytest.raises(ValueError, match="unknown drop format"):
        write_drop(str(tmp_path), "transactions", day, table, fmt="json")


@pytest.mark.parametrize("dataset", [TRANSACTIONS, LABELS])
def test_csv_drops_round_trip_with_iso_utc_timestamps(tmp_path: Path, dataset) -> None:
    day = WEEK[6]
    table = (transactions_for_day if dataset is TRANSACTIONS else labels_for_day)(day, CONFIG)
    folder = write_drop(str(tmp_path), dataset.name, day, table, fmt="csv")
    path = f"{folder}/part-00000.csv"
    text = Path(path).read_text(encoding="utf-8").splitlines()
    assert text[0].replace('"', "").split(",") == dataset.names
    stamp = text[1].split(",")[dataset.names.index(dataset.timestamp_column)].strip('"')
    assert dt.datetime.fromisoformat(stamp).tzinfo == dt.UTC and "T" in stamp and stamp.endswith("Z")

    types = {f.name: f.type for f in dataset.arrow_schema}
    back = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
    assert back.num_rows == table.num_rows
    for name in dataset.names:
        assert back.column(name).combine_chunks().equals(table.column(name).combine_chunks()), name
    assert pc.all(pc.equal(back.column(dataset.key_column), table.column(dataset.key_column))).as_py()


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="rows_per_day"):
        SimulationConfig(rows_per_day=0)
    with pytest.raises(ValueError, match="n_customers"):
        SimulationConfig(n_customers=3)
    assert SimulationConfig(rows_per_day=80).customers == 200
    assert SimulationConfig(rows_per_day=80_000).merchants == 2000
