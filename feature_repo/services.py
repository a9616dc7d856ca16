"""Feature services: the versioned feature sets models are trained and served with.

A new model version that needs other features gets a new service (``fraud_model_v2``); the old
one stays until no registered model uses it.
"""

from feast import FeatureService
from features import (
    customer_daily_features,
    customer_transaction_features,
    merchant_daily_features,
    merchant_transaction_features,
    transaction_features,
)

from include.mlops.features import CUSTOMER_FEATURES, FEATURE_SERVICE_NAME, MERCHANT_FEATURES

fraud_model_v1 = FeatureService(
    name=FEATURE_SERVICE_NAME,
    features=[
        # The home country is a string and only feeds is_foreign_country: not a model input.
        customer_daily_features[[name for name, _ in CUSTOMER_FEATURES if name != "customer_home_country"]],
        merchant_daily_features[[name for name, _ in MERCHANT_FEATURES]],
        transaction_features,
        customer_transaction_features,
        merchant_transaction_features,
    ],
    description="Card-fraud model, version 1: customer and merchant windows plus payment context.",
    tags={"model": "card_fraud", "version": "1"},
)
