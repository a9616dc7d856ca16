"""Canary routing: a sticky, uniform share of customers goes to the challenger."""

from __future__ import annotations

import random
import string

import pytest

from include.mlops import registry
from include.mlops.serving import canary_bucket, route, serves_canary

CUSTOMERS = [f"c{n:07d}" for n in range(5000)]


def _random_ids(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "-_é漢"
    return ["".join(rng.choices(alphabet, k=rng.randint(1, 40))) for _ in range(count)]


def test_a_customer_is_always_routed_the_same_way() -> None:
    first = [route(c, 0.3, True) for c in CUSTOMERS]
    again = [route(c, 0.3, True) for c in reversed(CUSTOMERS)][::-1]
    assert first == again
    assert {canary_bucket(c) for c in ["c0000042"] * 10} == {canary_bucket("c0000042")}


@pytest.mark.parametrize("share", [0.01, 0.05, 0.1, 0.25, 0.5, 0.9])
def test_the_canary_serves_its_share_of_customers_within_tolerance(share: float) -> None:
    for customers in (CUSTOMERS, _random_ids(5000, seed=3)):
        served = sum(route(c, share, True) == registry.CHALLENGER for c in customers)
        # Binomial: 4 standard deviations of the share over 5000 customers.
        tolerance = 4 * (share * (1 - share) / len(customers)) ** 0.5
        assert abs(served / len(customers) - share) <= tolerance, (share, served)


def test_raising_the_share_only_adds_customers_to_the_canary() -> None:
    small = {c for c in CUSTOMERS if serves_canary(c, 0.1)}
    large = {c for c in CUSTOMERS if serves_canary(c, 0.3)}
    assert small < large


def test_no_share_or_no_challenger_means_the_champion_serves_everyone() -> None:
    assert {route(c, 0.0, True) for c in CUSTOMERS} == {registry.CHAMPION}
    assert {route(c, 1.0, False) for c in CUSTOMERS} == {registry.CHAMPION}
    assert {route(c, 1.0, True) for c in CUSTOMERS} == {registry.CHALLENGER}


def test_buckets_are_in_the_unit_interval_for_any_id() -> None:
    buckets = [canary_bucket(c) for c in [*_random_ids(2000, seed=9), "", "\x00", "\ud800"]]
    assert all(0.0 <= b < 1.0 for b in buckets)
