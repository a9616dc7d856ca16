"""Entities: the card holder and the acceptor of a payment (join keys from the data contract)."""

from feast import Entity, ValueType

# value_type is given so that `apply` does not have to open the lake to infer the key's type
# (it cannot before the first snapshot is written).
customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="The card holder (transactions.customer_id).",
)

merchant = Entity(
    name="merchant",
    join_keys=["merchant_id"],
    value_type=ValueType.STRING,
    description="The card acceptor (transactions.merchant_id).",
)
