"""Feature views: daily customer and merchant snapshots, and on-demand features of the payment.

The on-demand functions are thin wrappers: Feast 0.67 re-creates a transformation from its source
text with only pandas and numpy in scope, so each one imports its logic from the project package
when it runs (and that logic is tested there).
"""

import pandas as pd
from entities import customer, merchant
from feast import FeatureView
from feast.on_demand_feature_view import on_demand_feature_view
from sources import (
    customer_snapshot_fields,
    customer_snapshots,
    fields,
    merchant_snapshot_fields,
    merchant_snapshots,
    transaction,
)

from include.mlops.features import (
    CUSTOMER_TRANSACTION_FEATURES,
    CUSTOMER_VIEW,
    MERCHANT_TRANSACTION_FEATURES,
    MERCHANT_VIEW,
    SNAPSHOT_TTL,
    TRANSACTION_FEATURES,
)

customer_daily_features = FeatureView(
    name=CUSTOMER_VIEW,
    entities=[customer],
    ttl=SNAPSHOT_TTL,
    schema=customer_snapshot_fields,
    source=customer_snapshots,
    online=True,
    description="Customer behaviour over the 1, 7 and 30 days before the end of each day.",
    tags={"team": "fraud", "cadence": "daily"},
)

merchant_daily_features = FeatureView(
    name=MERCHANT_VIEW,
    entities=[merchant],
    ttl=SNAPSHOT_TTL,
    schema=merchant_snapshot_fields,
    source=merchant_snapshots,
    online=True,
    description="Merchant volume, amounts and known fraud rate over the 1, 7 and 30 days before each day.",
    tags={"team": "fraud", "cadence": "daily"},
)


@on_demand_feature_view(
    sources=[transaction],
    schema=fields(TRANSACTION_FEATURES),
    mode="pandas",
    description="Hour, night-time, channel, card presence and small amount of the payment itself.",
)
def transaction_features(inputs: pd.DataFrame) -> pd.DataFrame:
    from include.mlops.features import transaction_features as transform

    return transform(inputs)


@on_demand_feature_view(
    sources=[
        customer_daily_features[
            [
                "customer_amount_mean_7d",
                "customer_amount_mean_30d",
                "customer_amount_std_30d",
                "customer_home_country",
            ]
        ],
        transaction,
    ],
    schema=fields(CUSTOMER_TRANSACTION_FEATURES),
    mode="pandas",
    description="The payment's amount and country against its customer's recent habits.",
)
def customer_transaction_features(inputs: pd.DataFrame) -> pd.DataFrame:
    from include.mlops.features import customer_transaction_features as transform

    return transform(inputs)


@on_demand_feature_view(
    sources=[merchant_daily_features[["merchant_amount_mean_30d"]], transaction],
    schema=fields(MERCHANT_TRANSACTION_FEATURES),
    mode="pandas",
    description="The payment's amount against its merchant's 30-day mean.",
)
def merchant_transaction_features(inputs: pd.DataFrame) -> pd.DataFrame:
    from include.mlops.features import merchant_transaction_features as transform

    return transform(inputs)
