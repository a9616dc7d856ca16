"""Which model serves a payment: the champion, or the challenger for the canary's customers.

Pure and deterministic: a customer's bucket is a hash of ``customer_id``, so the same customer is
always served by the same model while the share and the aliases stay as they are (sticky), and a
share of ``s`` sends about ``s`` of the customers, whatever their ids look like, to the challenger.
Raising the share only adds customers to the canary; none moves back.
"""

from __future__ import annotations

import hashlib

from include.mlops import registry

_SALT = b"mlops-canary:"
# 2**64: the bucket is the first 8 bytes of the digest as a fraction of it.
_SPAN = float(1 << 64)


def canary_bucket(customer_id: str) -> float:
    """The customer's place in ``[0, 1)``: uniform over customers, the same on every call and pod."""
    digest = hashlib.blake2b(_SALT + customer_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SPAN


def serves_canary(customer_id: str, share: float) -> bool:
    """Whether the challenger serves this customer at a canary share of ``share`` (0 to 1)."""
    return share > 0 and canary_bucket(customer_id) < share


def route(customer_id: str, share: float, has_challenger: bool) -> str:
    """The alias whose model serves the payment: :data:`registry.CHALLENGER` for a canary customer
    while a distinct challenger is loaded, :data:`registry.CHAMPION` otherwise."""
    if has_challenger and serves_canary(customer_id, share):
        return registry.CHALLENGER
    return registry.CHAMPION
