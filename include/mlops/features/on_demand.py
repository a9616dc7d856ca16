"""On-demand transformations: features of the payment itself and relative to its snapshots.

Referenced by ``feature_repo/features.py`` and run by Feast, offline and online alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from include.mlops.features.contract import NIGHT_END_HOUR, SMALL_AMOUNT

if TYPE_CHECKING:
    import pandas as pd


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    import pandas as pd

    # Online, a missing feature arrives as None in an object column: coerce to float NaN.
    return pd.to_numeric(frame[column], errors="coerce").astype("float64")


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    return (numerator / denominator.where(denominator > 0)).astype("float64")


def transaction_features(inputs: pd.DataFrame) -> pd.DataFrame:
    """Features of the payment itself: its UTC hour, night-time, channel, card presence, small amount."""
    import pandas as pd

    out = pd.DataFrame(index=inputs.index)
    hour = pd.to_datetime(inputs["event_timestamp"], utc=True).dt.hour.astype("int64")
    out["transaction_hour"] = hour
    out["is_night"] = (hour < NIGHT_END_HOUR).astype("int64")
    out["is_online"] = (inputs["channel"].astype("string") == "online").fillna(False).astype("int64")
    out["is_card_present"] = inputs["card_present"].astype("boolean").fillna(False).astype("int64")
    out["is_small_amount"] = (_numeric(inputs, "amount") < SMALL_AMOUNT).astype("int64")
    return out


def customer_transaction_features(inputs: pd.DataFrame) -> pd.DataFrame:
    """The payment against its customer's snapshot: amount vs 7/30-day mean, z-score, foreign country."""
    import pandas as pd

    out = pd.DataFrame(index=inputs.index)
    amount = _numeric(inputs, "amount")
    mean_30 = _numeric(inputs, "customer_amount_mean_30d")
    std_30 = _numeric(inputs, "customer_amount_std_30d")
    out["amount_to_customer_mean_7d"] = _ratio(amount, _numeric(inputs, "customer_amount_mean_7d"))
    out["amount_to_customer_mean_30d"] = _ratio(amount, mean_30)
    out["amount_zscore_30d"] = _ratio(amount - mean_30, std_30)
    home = inputs["customer_home_country"].astype("string")
    country = inputs["country"].astype("string")
    out["is_foreign_country"] = np.where(home.isna(), np.nan, (country != home).astype("float64"))
    return out


def merchant_transaction_features(inputs: pd.DataFrame) -> pd.DataFrame:
    """The payment against its merchant's snapshot: amount vs the merchant's 30-day mean."""
    import pandas as pd

    out = pd.DataFrame(index=inputs.index)
    out["amount_to_merchant_mean_30d"] = _ratio(
        _numeric(inputs, "amount"), _numeric(inputs, "merchant_amount_mean_30d")
    )
    return out
