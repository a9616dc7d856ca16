"""Synthetic card payments and their fraud labels, one landing drop a day.

The model of the world
======================

Population (derived from the seed only, never from the day):

* **Customers** (``rows_per_day / 8``, at least 200). Each has a home country (mostly DE, FR, GB,
  US, ES, IT, NL; a few CH, PL, SE, BR, NG, RU), an activity level (gamma: some cards are used far
  more than others), a usual amount level (lognormal, median about 35), an online propensity
  (beta, mean 0.25), an hour shift of their daily routine (normal, sd 1.2 h) and five usual
  merchants: physical shops and ATMs of their home country, and online merchants (70 % domestic).
* **Merchants** (``rows_per_day / 40``, at least 50). Each has a category, a country and one
  channel: ``atm`` for ``cash_withdrawal``, ``online`` for ``digital_goods`` and for a
  category-dependent share of the others (travel 70 %, electronics 50 %, ...), ``pos`` otherwise,
  and a popularity (lognormal). ``card_present`` is true for ``pos`` and ``atm``, false online.
  A payment's country is its merchant's country; its currency is that country's currency
  (:data:`~include.mlops.schema.COUNTRY_CURRENCY`); its ``card_country`` is the card holder's
  home country (the card was issued there), whatever the merchant's. Amounts are drawn on one
  price scale whatever the currency: the contract bounds every amount by ``MAX_AMOUNT``, so no
  exchange rate is applied.

A day (all times UTC; the portfolio is mostly European):

* **Volume**: ``rows_per_day`` times a weekday factor (Mon 0.93, Tue 0.91, Wed 0.95, Thu 1.00,
  Fri 1.10, Sat 1.13, Sun 0.98) times a small day-to-day noise (sd 1.5 %, at most 3 %).
* **Legitimate payments**: a customer drawn by activity; 85 % at one of their usual merchants
  (the first ones more often), 15 % exploring (30 % online, 8 % ATM, else a physical shop, at home
  or, 12 % of the time, abroad). The hour follows a daily profile (quiet from midnight to 5 am,
  peaks at lunch and early evening) shifted by the customer's routine. The amount is the customer's
  level times a category factor (travel 5x, electronics 3.5x, digital goods 0.35x, ...) times
  lognormal noise; ATM withdrawals are multiples of 20.
* **Fraud**, about 0.3-0.6 % of payments, in three recognisable patterns:

  a. *card testing*: bursts of 3-10 payments under 5.00 from one card, seconds to minutes apart,
     online, 70 % of bursts at a ``digital_goods`` merchant, half of them at night;
  b. *account takeover*: a victim's card suddenly pays 10-40x its usual amount at 1-3 foreign
     ``electronics``/``travel`` merchants it never used (riskier countries favoured) within the
     hour, 70 % of episodes between midnight and 6 am;
  c. *compromised merchant*: every third day (the phase depends on the seed) one physical shop
     with a few dozen to a few hundred payments that day gets extra skimmed-card payments in a
     4-7 hour window, so that 30-50 % of its payments that day are fraud.

Labels: every payment is labelled exactly once. A fraudulent one is charged back 1-5 days after it
(1: 8 %, 2: 37 %, 3: 33 %, 4: 14 %, 5: 8 %), reported between 06:00 and 22:00; a legitimate one is
confirmed at settlement exactly 3 days after it (``is_fraud = 0``). The labels drop of day ``D``
holds the labels reported on ``D``: payments of days ``D-5`` .. ``D-1``.

Drift (every day ``>= drift_from``; earlier days are byte-identical to a run without drift):

* **channel mix**: exploring customers go online 55 % of the time instead of 30 %, and 35 % of the
  payments that would have gone to a physical shop go to an online merchant instead (70 %
  domestic): the online share rises from about 0.25 to about 0.5, ``card_present`` falls with it;
* **amounts** of legitimate payments are inflated by 40 %;
* **account takeover changes shape**: domestic merchants (the victim's home country) in everyday
  categories (grocery, restaurant, fashion, entertainment, health), daytime (09:00-21:00), moderate
  amounts (about 2-3x the victim's usual level), still at merchants the victim never used. A model
  that learnt "foreign, night, large, electronics/travel" misses it.

Card testing and the compromised merchant do not drift. Everything is deterministic: the same
``(day, config)`` gives the same table, whatever else was generated before.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from include.mlops import lake
from include.mlops.core.schema import (
    CHANNELS,
    COUNTRIES,
    COUNTRY_CURRENCY,
    LABELS,
    MAX_AMOUNT,
    MAX_LABEL_DELAY_DAYS,
    MERCHANT_CATEGORIES,
    TIMESTAMP,
    TRANSACTIONS,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

SETTLEMENT_DELAY_DAYS: int = 3
"""A legitimate payment is confirmed exactly this long after it."""

FRAUD_PATTERNS: tuple[str, ...] = ("card_testing", "account_takeover", "compromised_merchant")
"""The fraud patterns, in the order of their codes (1, 2, 3) in :func:`truth_for_day`."""


_US_PER_SECOND = 1_000_000
_SECONDS_PER_DAY = 86_400
_US_PER_DAY = _SECONDS_PER_DAY * _US_PER_SECOND
_EPOCH = dt.date(1970, 1, 1)

_POS, _ONLINE, _ATM = CHANNELS.index("pos"), CHANNELS.index("online"), CHANNELS.index("atm")
_N_KINDS = len(CHANNELS)
_CARD_TESTING, _ACCOUNT_TAKEOVER, _COMPROMISED_MERCHANT = 1, 2, 3

# Share of customers (and merchants) by country, in COUNTRIES order.
_COUNTRY_SHARE = {
    "DE": 0.20, "FR": 0.14, "GB": 0.14, "US": 0.14, "ES": 0.09, "IT": 0.09, "NL": 0.06,
    "CH": 0.03, "PL": 0.04, "SE": 0.03, "BR": 0.02, "NG": 0.01, "RU": 0.01,
}  # fmt: skip
# How strongly account takeovers favour a country's merchants (times the merchant's popularity).
_TAKEOVER_COUNTRY_RISK = {"US": 1.5, "GB": 1.2, "BR": 2.5, "NG": 3.0, "RU": 3.0}
# category: (share of merchants, share of them online, amount factor)
_CATEGORY_PROFILE = {
    "grocery": (0.20, 0.05, 1.0),
    "restaurant": (0.18, 0.10, 0.9),
    "fuel": (0.07, 0.0, 1.4),
    "travel": (0.05, 0.70, 5.0),
    "electronics": (0.07, 0.50, 3.5),
    "fashion": (0.13, 0.35, 1.8),
    "entertainment": (0.08, 0.40, 1.0),
    "health": (0.07, 0.10, 0.9),
    "digital_goods": (0.07, 1.0, 0.35),
    "cash_withdrawal": (0.08, 0.0, 2.5),
}
_EVERYDAY = ("grocery", "restaurant", "fashion", "entertainment", "health")
_WEEKDAY_FACTOR = (0.93, 0.91, 0.95, 1.00, 1.10, 1.13, 0.98)  # Monday first; mean 1
_HOUR_WEIGHT = (
    0.6, 0.35, 0.25, 0.2, 0.25, 0.5, 1.5, 3.0, 4.5, 5.0, 5.5, 6.0,
    7.0, 6.5, 5.5, 5.5, 6.0, 7.0, 7.5, 7.0, 6.0, 4.5, 3.0, 1.5,
)  # fmt: skip
_USUAL_SLOT_WEIGHT = (0.34, 0.24, 0.18, 0.13, 0.11)
_CHARGEBACK_DELAY_WEIGHT = (0.08, 0.37, 0.33, 0.14, 0.08)  # 1..MAX_LABEL_DELAY_DAYS days

_EXPLORE_SHARE = 0.15
_EXPLORE_ONLINE = 0.30
_EXPLORE_ONLINE_DRIFTED = 0.55
_EXPLORE_ATM = 0.08
_ABROAD_SHARE = 0.12
_CROSS_BORDER_ONLINE = 0.30
_DRIFT_TO_ONLINE = 0.35

# Random streams: one per component, so that a component's draws never shift another's.
_STREAM_POPULATION, _STREAM_LEGIT, _STREAM_TESTING, _STREAM_TAKEOVER, _STREAM_MERCHANT = 0, 1, 2, 3, 4
_STREAM_DRIFT, _STREAM_LABELS = 5, 6


@dataclass(frozen=True)
class SimulationConfig:
    """What the simulated world looks like; the same config and day always give the same data.

    ``n_customers`` and ``n_merchants`` default to ``rows_per_day / 8`` (at least 200) and
    ``rows_per_day / 40`` (at least 50). The fraud knobs are per legitimate payment;
    ``drift_amount_factor`` multiplies legitimate amounts from ``drift_from`` on.
    """

    seed: int = 7
    rows_per_day: int = 20_000
    drift_from: dt.date | None = None
    n_customers: int | None = None
    n_merchants: int | None = None
    card_testing_rate: float = 0.0015
    account_takeover_rate: float = 0.002
    compromised_merchant_rate: float = 0.003
    compromised_merchant_every_days: int = 3
    drift_amount_factor: float = 1.4

    def __post_init__(self) -> None:
        if self.rows_per_day < 1:
            raise ValueError(f"rows_per_day must be positive, not {self.rows_per_day}")
        if self.compromised_merchant_every_days < 1:
            raise ValueError("compromised_merchant_every_days must be positive")
        for name in ("n_customers", "n_merchants"):
            value = getattr(self, name)
            if value is not None and value < 20:
                raise ValueError(f"{name} must be at least 20, not {value}")

    @property
    def customers(self) -> int:
        return self.n_customers or max(200, self.rows_per_day // 8)

    @property
    def merchants(self) -> int:
        return self.n_merchants or max(50, self.rows_per_day // 40)

    def drifted(self, day: dt.date) -> bool:
        """Whether ``day`` is on or after the drift."""
        return self.drift_from is not None and day >= self.drift_from


# --------------------------------------------------------------------------------------------------
# Population


def _rng(seed: int, stream: int, day: dt.date | None = None) -> np.random.Generator:
    key = [seed & 0xFFFFFFFF, stream] + ([] if day is None else [day.toordinal()])
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))


def _cdf(weights: np.ndarray | tuple[float, ...]) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    cdf = np.cumsum(w / w.sum())
    cdf[-1] = 1.0
    return cdf


def _draw(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    """``n`` indices drawn with the probabilities whose cumulative sum is ``cdf``."""
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """``prefix`` followed by each number zero-padded to ``width`` digits, vectorised."""
    digits = pc.utf8_lpad(pa.array(numbers, type=pa.int64()).cast(pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


class _Pool:
    """Weighted draws of members within groups, vectorised.

    Members of group ``g`` occupy the interval ``(g, g + 1]`` of one sorted cumulative array, so a
    single ``searchsorted`` draws for many rows, each in its own group. An empty group is served by
    its ``fallback`` group.
    """

    def __init__(self, groups: np.ndarray, weights: np.ndarray, n_groups: int, fallback: np.ndarray):
        members = np.flatnonzero(groups >= 0)
        members = members[np.argsort(groups[members], kind="stable")]
        g = groups[members]
        w = weights[members].astype(float)
        counts = np.bincount(g, minlength=n_groups)
        totals = np.bincount(g, weights=w, minlength=n_groups)
        ends = np.cumsum(counts)
        starts = ends - counts
        cw = np.cumsum(w)
        base = np.where(starts > 0, cw[np.maximum(starts - 1, 0)], 0.0)
        within = (cw - base[g]) / totals[g]
        within[ends[counts > 0] - 1] = 1.0
        self.members = members
        self.cdf = g + within
        self.route = np.where(counts > 0, np.arange(n_groups), fallback)
        if (counts[self.route] == 0).any():
            raise ValueError("a fallback group is empty")

    def draw(self, rng: np.random.Generator, groups: np.ndarray | int, n: int | None = None) -> np.ndarray:
        groups = np.broadcast_to(np.asarray(groups), (n,) if n is not None else np.shape(groups))
        target = self.route[groups] + rng.random(groups.shape)
        pos = np.searchsorted(self.cdf, target, side="right")
        return self.members[np.minimum(pos, len(self.members) - 1)]


@dataclass(frozen=True)
class _Population:
    # customers
    home: np.ndarray
    activity_cdf: np.ndarray
    level: np.ndarray
    shift_seconds: np.ndarray
    usual: np.ndarray  # (customers, slots) merchant indices
    customer_ids: pa.Array
    # merchants
    m_country: np.ndarray
    m_category: np.ndarray
    m_kind: np.ndarray
    merchant_ids: pa.Array
    by_country_kind: _Pool
    online_any: _Pool
    digital: _Pool
    takeover_classic: _Pool
    everyday_by_country: _Pool


_COUNTRY_CDF = _cdf(tuple(_COUNTRY_SHARE[c] for c in COUNTRIES))
_CATEGORY_CDF = _cdf(tuple(_CATEGORY_PROFILE[c][0] for c in MERCHANT_CATEGORIES))
_CATEGORY_ONLINE = np.array([_CATEGORY_PROFILE[c][1] for c in MERCHANT_CATEGORIES])
_CATEGORY_AMOUNT = np.array([_CATEGORY_PROFILE[c][2] for c in MERCHANT_CATEGORIES])
_HOUR_CDF = _cdf(_HOUR_WEIGHT)
_SLOT_CDF = _cdf(_USUAL_SLOT_WEIGHT)
_CHARGEBACK_CDF = _cdf(_CHARGEBACK_DELAY_WEIGHT)
_CAT = {c: i for i, c in enumerate(MERCHANT_CATEGORIES)}
_COUNTRY_IDX = {c: i for i, c in enumerate(COUNTRIES)}
_COUNTRY_ARRAY = pa.array(COUNTRIES, type=pa.string())
_CURRENCY_ARRAY = pa.array([COUNTRY_CURRENCY[c] for c in COUNTRIES], type=pa.string())
_CATEGORY_ARRAY = pa.array(MERCHANT_CATEGORIES, type=pa.string())
_CHANNEL_ARRAY = pa.array(CHANNELS, type=pa.string())
assert len(_COUNTRY_SHARE) == len(COUNTRIES) and len(_CHARGEBACK_DELAY_WEIGHT) == MAX_LABEL_DELAY_DAYS


@functools.lru_cache(maxsize=4)
def _population(seed: int, n_customers: int, n_merchants: int) -> _Population:
    rng = _rng(seed, _STREAM_POPULATION)
    n_c, n_m = n_customers, n_merchants
    n_countries = len(COUNTRIES)

    # Merchants. The first ones are fixed so that every pool the day draws from is non-empty:
    # a physical grocery in every country, then an online digital-goods shop, a DE ATM, a US
    # online electronics shop and a GB online travel agency.
    m_country = _draw(rng, _COUNTRY_CDF, n_m)
    m_category = _draw(rng, _CATEGORY_CDF, n_m)
    online = rng.random(n_m) < _CATEGORY_ONLINE[m_category]
    popularity = rng.lognormal(0.0, 1.0, n_m)
    fixed = [(c, "grocery", False) for c in COUNTRIES] + [
        ("DE", "digital_goods", True),
        ("DE", "cash_withdrawal", False),
        ("US", "electronics", True),
        ("GB", "travel", True),
    ]
    for i, (country, category, is_online) in enumerate(fixed[:n_m]):
        m_country[i], m_category[i], online[i] = _COUNTRY_IDX[country], _CAT[category], is_online
    m_kind = np.where(m_category == _CAT["cash_withdrawal"], _ATM, np.where(online, _ONLINE, _POS))

    kind_fallback = np.arange(n_countries * _N_KINDS) % _N_KINDS  # country 0 (DE), same kind
    by_country_kind = _Pool(m_country * _N_KINDS + m_kind, popularity, n_countries * _N_KINDS, kind_fallback)
    one = np.zeros(1, dtype=np.int64)
    online_any = _Pool(np.where(m_kind == _ONLINE, 0, -1), popularity, 1, one)
    digital = _Pool(
        np.where((m_category == _CAT["digital_goods"]) & (m_kind == _ONLINE), 0, -1), popularity, 1, one
    )
    risk = np.array([_TAKEOVER_COUNTRY_RISK.get(c, 1.0) for c in COUNTRIES])[m_country]
    classic = np.isin(m_category, [_CAT["electronics"], _CAT["travel"]])
    takeover_classic = _Pool(np.where(classic, 0, -1), np.sqrt(popularity) * risk, 1, one)
    everyday = np.isin(m_category, [_CAT[c] for c in _EVERYDAY])
    everyday_by_country = _Pool(
        np.where(everyday, m_country, -1), popularity, n_countries, np.zeros(n_countries, dtype=np.int64)
    )

    # Customers.
    home = _draw(rng, _COUNTRY_CDF, n_c)
    activity_cdf = _cdf(rng.gamma(1.5, 1.0, n_c) + 1e-3)
    level = rng.lognormal(np.log(35.0), 0.7, n_c)
    propensity = rng.beta(2.0, 6.0, n_c)
    shift_seconds = rng.normal(0.0, 1.2 * 3600, n_c)
    slots = len(_USUAL_SLOT_WEIGHT)
    kind = np.where(
        rng.random((n_c, slots)) < propensity[:, None],
        _ONLINE,
        np.where(rng.random((n_c, slots)) < 0.12, _ATM, _POS),
    )
    usual = by_country_kind.draw(rng, home[:, None] * _N_KINDS + kind)
    cross_border = (kind == _ONLINE) & (rng.random((n_c, slots)) < _CROSS_BORDER_ONLINE)
    usual = np.where(cross_border, online_any.draw(rng, 0, n_c * slots).reshape(n_c, slots), usual)

    return _Population(
        home=home,
        activity_cdf=activity_cdf,
        level=level,
        shift_seconds=shift_seconds,
        usual=usual,
        customer_ids=_ids("c", np.arange(n_c), max(7, len(str(n_c)))),
        m_country=m_country,
        m_category=m_category,
        m_kind=m_kind,
        merchant_ids=_ids("m", np.arange(n_m), max(6, len(str(n_m)))),
        by_country_kind=by_country_kind,
        online_any=online_any,
        digital=digital,
        takeover_classic=takeover_classic,
        everyday_by_country=everyday_by_country,
    )


# --------------------------------------------------------------------------------------------------
# One day


@dataclass
class _Rows:
    """Payments as parallel arrays (customer and merchant indices, microseconds into the day)."""

    customer: np.ndarray
    merchant: np.ndarray
    us: np.ndarray
    amount: np.ndarray
    pattern: np.ndarray

    @classmethod
    def concat(cls, parts: list[_Rows]) -> _Rows:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))

    def __len__(self) -> int:
        return len(self.customer)


@dataclass(frozen=True)
class _Truth:
    """What only the simulator knows about a day's payments, in transaction-id order."""

    ids: pa.Array
    event_us: np.ndarray  # microseconds since the epoch
    is_fraud: np.ndarray
    pattern: np.ndarray
    delay_days: np.ndarray
    reported_us: np.ndarray


def _day_start_us(day: dt.date) -> int:
    return (day - _EPOCH).days * _US_PER_DAY


def _rows(customer, merchant, seconds, amount, pattern: int) -> _Rows:
    us = np.clip((np.asarray(seconds) * _US_PER_SECOND).astype(np.int64), 0, _US_PER_DAY - 1)
    return _Rows(
        customer=np.asarray(customer, dtype=np.int64),
        merchant=np.asarray(merchant, dtype=np.int64),
        us=us,
        amount=np.asarray(amount, dtype=float),
        pattern=np.full(len(us), pattern, dtype=np.int8),
    )


def _volume(day: dt.date, config: SimulationConfig) -> int:
    noise = np.clip(_rng(config.seed, _STREAM_LEGIT, day).normal(1.0, 0.015), 0.97, 1.03)
    return max(1, round(config.rows_per_day * _WEEKDAY_FACTOR[day.weekday()] * noise))


def _legitimate(day: dt.date, config: SimulationConfig, pop: _Population) -> _Rows:
    n = _volume(day, config)
    rng = _rng(config.seed, _STREAM_LEGIT, day)
    rng.normal()  # the volume noise
    drifted = config.drifted(day)

    customer = _draw(rng, pop.activity_cdf, n)
    home = pop.home[customer]
    merchant = pop.usual[customer, _draw(rng, _SLOT_CDF, n)]

    explore = rng.random(n) < _EXPLORE_SHARE
    p_online = _EXPLORE_ONLINE_DRIFTED if drifted else _EXPLORE_ONLINE
    u = rng.random(n)
    kind = np.where(u < p_online, _ONLINE, np.where(u < p_online + _EXPLORE_ATM, _ATM, _POS))
    abroad = (kind != _ONLINE) & (rng.random(n) < _ABROAD_SHARE)
    country = np.where(abroad, _draw(rng, _COUNTRY_CDF, n), home)
    explored = pop.by_country_kind.draw(rng, country * _N_KINDS + kind)
    cross_border = (kind == _ONLINE) & (rng.random(n) < _CROSS_BORDER_ONLINE)
    explored = np.where(cross_border, pop.online_any.draw(rng, 0, n), explored)
    merchant = np.where(explore, explored, merchant)

    hour = _draw(rng, _HOUR_CDF, n)
    seconds = (hour + rng.random(n)) * 3600 + pop.shift_seconds[customer]
    seconds = np.mod(seconds, _SECONDS_PER_DAY)
    amount = pop.level[customer] * _CATEGORY_AMOUNT[pop.m_category[merchant]] * rng.lognormal(0.0, 0.45, n)

    if drifted:
        drift = _rng(config.seed, _STREAM_DRIFT, day)
        to_online = (pop.m_kind[merchant] == _POS) & (drift.random(n) < _DRIFT_TO_ONLINE)
        domestic = pop.by_country_kind.draw(drift, home * _N_KINDS + _ONLINE)
        anywhere = pop.online_any.draw(drift, 0, n)
        replacement = np.where(drift.random(n) < _CROSS_BORDER_ONLINE, anywhere, domestic)
        ratio = _CATEGORY_AMOUNT[pop.m_category[replacement]] / _CATEGORY_AMOUNT[pop.m_category[merchant]]
        amount = np.where(to_online, amount * ratio, amount) * config.drift_amount_factor
        merchant = np.where(to_online, replacement, merchant)

    atm = pop.m_kind[merchant] == _ATM
    amount = np.where(atm, np.maximum(20.0, np.round(amount / 20.0) * 20.0), amount)
    return _rows(customer, merchant, seconds, amount, 0)


def _card_testing(day: dt.date, config: SimulationConfig, pop: _Population, n_legit: int) -> _Rows:
    rng = _rng(config.seed, _STREAM_TESTING, day)
    bursts = rng.poisson(n_legit * config.card_testing_rate / 6.5)
    sizes = rng.integers(3, 11, bursts)
    victim = rng.integers(0, len(pop.home), bursts)
    at_digital = rng.random(bursts) < 0.7
    merchant = np.where(at_digital, pop.digital.draw(rng, 0, bursts), pop.online_any.draw(rng, 0, bursts))
    night = rng.random(bursts) < 0.5
    start = np.where(night, rng.uniform(0, 6 * 3600, bursts), rng.uniform(0, _SECONDS_PER_DAY - 3600, bursts))

    n = int(sizes.sum())
    burst = np.repeat(np.arange(bursts), sizes)
    gaps = rng.exponential(40.0, n)
    first = np.cumsum(sizes) - sizes
    gaps[first] = 0.0
    elapsed = np.cumsum(gaps)
    elapsed -= np.repeat(elapsed[first], sizes)
    amount = np.where(rng.random(n) < 0.3, 1.0, np.round(rng.uniform(0.5, 4.99, n), 2))
    return _rows(victim[burst], merchant[burst], start[burst] + elapsed, amount, _CARD_TESTING)


def _never_used(
    pop: _Population,
    victim: np.ndarray,
    pick: Callable[[np.ndarray], np.ndarray],
    reject: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Merchants drawn by ``pick(rows)``, redrawn (a few times) where the victim already uses them."""
    merchant = pick(np.arange(len(victim)))
    for _ in range(20):
        bad = (pop.usual[victim] == merchant[:, None]).any(axis=1)
        if reject is not None:
            bad |= reject(victim, merchant)
        rows = np.flatnonzero(bad)
        if not len(rows):
            break
        merchant[rows] = pick(rows)
    return merchant


def _account_takeover(day: dt.date, config: SimulationConfig, pop: _Population, n_legit: int) -> _Rows:
    rng = _rng(config.seed, _STREAM_TAKEOVER, day)
    episodes = rng.poisson(n_legit * config.account_takeover_rate / 2.0)
    sizes = rng.integers(1, 4, episodes)
    n = int(sizes.sum())
    episode = np.repeat(np.arange(episodes), sizes)
    victim = rng.integers(0, len(pop.home), episodes)[episode]
    offset = rng.uniform(0, 3600, n)

    if not config.drifted(day):
        night = rng.random(episodes) < 0.7
        start = np.where(night, rng.uniform(0, 5 * 3600, episodes), rng.uniform(0, 23 * 3600, episodes))
        merchant = _never_used(
            pop,
            victim,
            lambda rows: pop.takeover_classic.draw(rng, 0, len(rows)),
            lambda v, m: pop.m_country[m] == pop.home[v],
        )
        amount = pop.level[victim] * rng.uniform(10.0, 40.0, n)
    else:
        start = rng.uniform(9 * 3600, 20 * 3600, episodes)
        home = pop.home[victim]
        merchant = _never_used(pop, victim, lambda rows: pop.everyday_by_country.draw(rng, home[rows]))
        amount = pop.level[victim] * _CATEGORY_AMOUNT[pop.m_category[merchant]] * rng.uniform(2.0, 3.0, n)
    return _rows(victim, merchant, start[episode] + offset, amount, _ACCOUNT_TAKEOVER)


def _compromised_merchant(day: dt.date, config: SimulationConfig, pop: _Population, legit: _Rows) -> _Rows:
    period = config.compromised_merchant_every_days
    if (day.toordinal() + config.seed) % period:
        return _rows([], [], [], [], _COMPROMISED_MERCHANT)
    rng = _rng(config.seed, _STREAM_MERCHANT, day)
    rate = rng.uniform(0.3, 0.5)
    counts = np.bincount(legit.merchant, minlength=len(pop.m_kind))
    candidates = np.flatnonzero((pop.m_kind == _POS) & (counts >= 10))
    if not len(candidates):
        return _rows([], [], [], [], _COMPROMISED_MERCHANT)
    target = len(legit) * config.compromised_merchant_rate * (1 - rate) / rate
    chosen = candidates[np.argmin(np.abs(counts[candidates] - target))]
    n = max(5, round(counts[chosen] * rate / (1 - rate)))
    victim = rng.integers(0, len(pop.home), n)
    start = rng.uniform(9 * 3600, 14 * 3600)
    seconds = start + rng.uniform(0, rng.uniform(4, 7) * 3600, n)
    amount = pop.level[victim] * _CATEGORY_AMOUNT[pop.m_category[chosen]] * rng.lognormal(np.log(1.5), 0.4, n)
    return _rows(victim, np.full(n, chosen), seconds, amount, _COMPROMISED_MERCHANT)


def _generate(
    day: dt.date, config: SimulationConfig, with_table: bool = True
) -> tuple[pa.Table | None, _Truth]:
    pop = _population(config.seed, config.customers, config.merchants)
    legit = _legitimate(day, config, pop)
    rows = _Rows.concat(
        [
            legit,
            _card_testing(day, config, pop, len(legit)),
            _account_takeover(day, config, pop, len(legit)),
            _compromised_merchant(day, config, pop, legit),
        ]
    )
    order = np.argsort(rows.us, kind="stable")
    rows = _Rows(*(getattr(rows, f)[order] for f in _Rows.__dataclass_fields__))
    n = len(rows)
    event_us = rows.us + _day_start_us(day)
    ids = _ids(f"t{day:%Y%m%d}-", np.arange(1, n + 1), max(7, len(str(n))))

    is_fraud = (rows.pattern > 0).astype(np.int8)
    labels_rng = _rng(config.seed, _STREAM_LABELS, day)
    delay = (_draw(labels_rng, _CHARGEBACK_CDF, n) + 1).astype(np.int8)
    delay[is_fraud == 0] = SETTLEMENT_DELAY_DAYS
    within = labels_rng.uniform(6 * 3600, 22 * 3600, n) * _US_PER_SECOND
    reported_us = np.where(
        is_fraud == 1,
        _day_start_us(day) + delay.astype(np.int64) * _US_PER_DAY + within.astype(np.int64),
        event_us + SETTLEMENT_DELAY_DAYS * _US_PER_DAY,
    )
    truth = _Truth(ids, event_us, is_fraud, rows.pattern, delay, reported_us)
    if not with_table:
        return None, truth

    amount = np.round(np.clip(rows.amount, 0.01, MAX_AMOUNT), 2)
    country = pa.array(pop.m_country[rows.merchant])
    kind = pop.m_kind[rows.merchant]
    table = pa.table(
        {
            "transaction_id": ids,
            "event_timestamp": pa.array(event_us, type=TIMESTAMP),
            "customer_id": pop.customer_ids.take(pa.array(rows.customer)),
            "merchant_id": pop.merchant_ids.take(pa.array(rows.merchant)),
            "amount": pa.array(amount, type=pa.float64()),
            "currency": _CURRENCY_ARRAY.take(country),
            "country": _COUNTRY_ARRAY.take(country),
            "merchant_category": _CATEGORY_ARRAY.take(pa.array(pop.m_category[rows.merchant])),
            "channel": _CHANNEL_ARRAY.take(pa.array(kind)),
            "card_present": pa.array(kind != _ONLINE, type=pa.bool_()),
            # The card was issued in its holder's home country: derived, no random draw.
            "card_country": _COUNTRY_ARRAY.take(pa.array(pop.home[rows.customer])),
        },
        schema=TRANSACTIONS.arrow_schema,
    )
    return table, truth


# --------------------------------------------------------------------------------------------------
# Public API


def transactions_for_day(day: dt.date, config: SimulationConfig) -> pa.Table:
    """The payments authorised on ``day`` (UTC), sorted by time, in the transactions schema.

    About ``config.rows_per_day`` rows times the weekday factor, plus the day's fraud. Ids are
    ``tYYYYMMDD-NNNNNNN`` (numbered in time order), hence unique across days.
    """
    table, _ = _generate(day, config)
    assert table is not None
    return table


def truth_for_day(day: dt.date, config: SimulationConfig) -> pa.Table:
    """The hidden truth of ``day``'s payments, in transaction-id order.

    Columns: ``transaction_id``, ``event_timestamp``, ``is_fraud`` (int8), ``fraud_pattern``
    (null, or one of :data:`FRAUD_PATTERNS`), ``label_delay_days`` (int8) and ``reported_at`` (when
    its label is reported). For tests and analyses; the pipeline only ever sees the labels drops.
    """
    _, truth = _generate(day, config, with_table=False)
    codes = pa.array(truth.pattern.astype(np.int32) - 1, mask=truth.pattern == 0)
    return pa.table(
        {
            "transaction_id": truth.ids,
            "event_timestamp": pa.array(truth.event_us, type=TIMESTAMP),
            "is_fraud": pa.array(truth.is_fraud, type=pa.int8()),
            "fraud_pattern": pa.array(FRAUD_PATTERNS, type=pa.string()).take(codes),
            "label_delay_days": pa.array(truth.delay_days, type=pa.int8()),
            "reported_at": pa.array(truth.reported_us, type=TIMESTAMP),
        }
    )


def fraud_flags_for_day(day: dt.date, config: SimulationConfig) -> pa.Table:
    """``transaction_id``, ``is_fraud`` (int8) and ``event_timestamp`` of every payment of ``day``."""
    _, truth = _generate(day, config, with_table=False)
    return pa.table(
        {
            "transaction_id": truth.ids,
            "is_fraud": pa.array(truth.is_fraud, type=pa.int8()),
            "event_timestamp": pa.array(truth.event_us, type=TIMESTAMP),
        }
    )


def _labels(day: dt.date, truths: Mapping[dt.date, _Truth]) -> pa.Table:
    ids, is_fraud, reported = [], [], []
    for delay in range(MAX_LABEL_DELAY_DAYS, 0, -1):
        truth = truths[day - dt.timedelta(days=delay)]
        rows = np.flatnonzero(truth.delay_days == delay)
        ids.append(truth.ids.take(pa.array(rows)))
        is_fraud.append(truth.is_fraud[rows])
        reported.append(truth.reported_us[rows])
    reported_us = np.concatenate(reported)
    order = np.argsort(reported_us, kind="stable")
    return pa.table(
        {
            "transaction_id": pa.concat_arrays(ids).take(pa.array(order)),
            "is_fraud": pa.array(np.concatenate(is_fraud)[order], type=pa.int8()),
            "reported_at": pa.array(reported_us[order], type=TIMESTAMP),
        },
        schema=LABELS.arrow_schema,
    )


def labels_for_day(day: dt.date, config: SimulationConfig) -> pa.Table:
    """The labels reported on ``day``, sorted by ``reported_at``, in the labels schema.

    They concern payments of days ``day - 5`` .. ``day - 1``: chargebacks (``is_fraud = 1``) 1-5
    days after the payment, settlements (``is_fraud = 0``) exactly 3 days after it. Over the days
    after a payment, it is labelled exactly once. Generates the five earlier days; :func:`simulate`
    reuses them instead when it writes consecutive days.
    """
    truths = {
        day - dt.timedelta(days=d): _generate(day - dt.timedelta(days=d), config, with_table=False)[1]
        for d in range(1, MAX_LABEL_DELAY_DAYS + 1)
    }
    return _labels(day, truths)


def _csv_bytes(table: pa.Table) -> bytes:
    import pyarrow.csv as pacsv

    columns = [
        pc.strftime(col, format="%Y-%m-%dT%H:%M:%SZ") if pa.types.is_timestamp(col.type) else col
        for col in table.columns
    ]
    sink = pa.BufferOutputStream()
    pacsv.write_csv(pa.table(columns, names=table.column_names), sink)
    return sink.getvalue().to_pybytes()


def write_drop(landing_url: str, dataset: str, day: dt.date, table: pa.Table, fmt: str = "parquet") -> str:
    """Write one day's drop: ``<landing_url>/<dataset>/dt=YYYY-MM-DD/part-00000.<fmt>`` + ``_SUCCESS``.

    ``fmt`` is ``parquet`` or ``csv`` (header row, timestamps as ISO-8601 UTC such as
    ``2026-01-05T10:00:00.123456Z``). The marker is removed first, then any other data file of the
    day, the data file is written atomically and the empty ``_SUCCESS`` marker last, so that a
    reader that waits for the marker never sees a partial or mixed drop. Returns the drop's URL.
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"unknown drop format {fmt!r}: use parquet or csv")
    folder = lake.partition_at(lake.location(landing_url), dataset, day)
    data_name = lake.DATA_FILE.replace(".parquet", f".{fmt}")
    marker = folder.join(lake.SUCCESS_MARKER)
    lake.delete(marker)
    for stale in lake.list_files(folder):
        name = stale.path.rsplit("/", 1)[-1]
        if name != data_name and not name.startswith("."):
            lake.delete(stale)
    data = folder.join(data_name)
    if fmt == "parquet":
        lake.write_parquet(data, table)
    else:
        lake.write_bytes(data, _csv_bytes(table))
    lake.write_bytes(marker, b"")
    return folder.url


def simulate(
    start: dt.date,
    days: int,
    config: SimulationConfig,
    out_url: str,
    fmt: str = "parquet",
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Write the transactions and labels drops of ``days`` days from ``start`` under ``out_url``.

    The labels drop of each day is exactly :func:`labels_for_day` (so the first five also label
    payments of the days before ``start``). Each day is generated once: the truth of the last
    ``MAX_LABEL_DELAY_DAYS`` days is kept while looping. Returns one summary per day:
    ``{"day", "transactions", "fraud", "labels", "drifted"}``.
    """
    if days < 0:
        raise ValueError(f"days must not be negative, not {days}")
    if days == 0:
        return []
    truths: dict[dt.date, _Truth] = {}
    for d in range(MAX_LABEL_DELAY_DAYS, 0, -1):
        before = start - dt.timedelta(days=d)
        truths[before] = _generate(before, config, with_table=False)[1]
    summary: list[dict] = []
    for i in range(days):
        day = start + dt.timedelta(days=i)
        table, truth = _generate(day, config)
        assert table is not None
        write_drop(out_url, TRANSACTIONS.name, day, table, fmt)
        labels = _labels(day, truths)
        write_drop(out_url, LABELS.name, day, labels, fmt)
        truths[day] = truth
        truths.pop(day - dt.timedelta(days=MAX_LABEL_DELAY_DAYS), None)
        row = {
            "day": day.isoformat(),
            "transactions": table.num_rows,
            "fraud": int(truth.is_fraud.sum()),
            "labels": labels.num_rows,
            "drifted": config.drifted(day),
        }
        summary.append(row)
        if progress is not None:
            progress(
                f"{row['day']}: {row['transactions']} transactions ({row['fraud']} fraud), "
                f"{row['labels']} labels{' [drifted]' if row['drifted'] else ''}"
            )
    return summary
