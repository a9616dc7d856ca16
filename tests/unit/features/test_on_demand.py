"""The on-demand transformations Feast runs, offline and online alike, on small frames."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from include.mlops.features import (
    CUSTOMER_TRANSACTION_FEATURES,
    MERCHANT_TRANSACTION_FEATURES,
    TRANSACTION_FEATURES,
    customer_transaction_features,
    merchant_transaction_features,
    transaction_features,
)

UTC = dt.UTC


def test_payment_features_flag_night_online_card_presence_and_small_amounts() -> None:
    inputs = pd.DataFrame(
        {
            "event_timestamp": [
                dt.datetime(2026, 1, 5, 5, 59, 59, tzinfo=UTC),  # the last second of the night
                dt.datetime(2026, 1, 5, 6, 0, tzinfo=UTC),
                # 23:30 in New York is 04:30 UTC: the hour is the UTC one.
                pd.Timestamp("2026-01-05 23:30", tz="America/New_York"),
            ],
            "amount": [4.99, 5.0, 120.0],
            "channel": ["online", "pos", None],
            "card_present": [False, True, None],
            "country": ["DE", "FR", "US"],
        },
        index=[10, 11, 12],
    )
    out = transaction_features(inputs)
    assert list(out.columns) == [name for name, _ in TRANSACTION_FEATURES]
    assert out.index.tolist() == [10, 11, 12]
    assert out["transaction_hour"].tolist() == [5, 6, 4]
    assert out["is_night"].tolist() == [1, 0, 1]
    assert out["is_online"].tolist() == [1, 0, 0]
    assert out["is_card_present"].tolist() == [0, 1, 0]
    assert out["is_small_amount"].tolist() == [1, 0, 0]
    assert all(out[c].dtype == "int64" for c in out.columns)


def test_customer_features_compare_the_payment_with_the_customers_history() -> None:
    inputs = pd.DataFrame(
        {
            "amount": [100.0, 30.0, 50.0, 10.0],
            "country": ["DE", "FR", "DE", "DE"],
            "customer_amount_mean_7d": [50.0, 0.0, None, 10.0],
            "customer_amount_mean_30d": [25.0, 10.0, None, 10.0],
            "customer_amount_std_30d": [15.0, 0.0, None, 0.0],
            "customer_home_country": ["DE", "DE", None, "DE"],
        }
    )
    out = customer_transaction_features(inputs)
    assert list(out.columns) == [name for name, _ in CUSTOMER_TRANSACTION_FEATURES]
    assert out["amount_to_customer_mean_7d"].tolist()[0] == 2.0
    assert out["amount_to_customer_mean_30d"].tolist()[:2] == [4.0, 3.0]
    assert out["amount_zscore_30d"].tolist()[0] == pytest.approx(5.0)
    # A mean or std of 0 and a customer without history give no ratio rather than infinity.
    assert np.isnan(out.loc[1, "amount_to_customer_mean_7d"])
    assert np.isnan(out.loc[1, "amount_zscore_30d"]) and np.isnan(out.loc[3, "amount_zscore_30d"])
    assert out.loc[2].isna().all()
    assert out["is_foreign_country"].tolist()[:2] == [0.0, 1.0]
    assert all(out[c].dtype == "float64" for c in out.columns)


def test_online_rows_with_missing_features_in_object_columns_are_coerced_to_nan() -> None:
    # Online, a missing feature arrives as None in an object column.
    inputs = pd.DataFrame(
        {
            "amount": [20.0, 20.0],
            "country": ["DE", "DE"],
            "customer_amount_mean_7d": pd.Series([None, 10.0], dtype=object),
            "customer_amount_mean_30d": pd.Series([None, 10.0], dtype=object),
            "customer_amount_std_30d": pd.Series([None, 5.0], dtype=object),
            "customer_home_country": pd.Series([None, "FR"], dtype=object),
            "merchant_amount_mean_30d": pd.Series([None, 40.0], dtype=object),
        }
    )
    customer = customer_transaction_features(inputs)
    assert customer.loc[0].isna().all()
    assert customer.loc[1].tolist() == [2.0, 2.0, 2.0, 1.0]
    merchant = merchant_transaction_features(inputs)
    assert list(merchant.columns) == [name for name, _ in MERCHANT_TRANSACTION_FEATURES]
    assert np.isnan(merchant.loc[0, "amount_to_merchant_mean_30d"])
    assert merchant.loc[1, "amount_to_merchant_mean_30d"] == 0.5
