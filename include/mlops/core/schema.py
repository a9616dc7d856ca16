"""The one definition of the data contract.

Everything that knows a column derives it from here: the simulator, the Great Expectations
suites, the lake writer, the Feast sources and the tests. Rename a column here and nowhere else.

Only ``pyarrow`` is imported at module level (cheap, and it is what the lake is written with);
pandas dtypes are derived on demand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

# ISO 4217 codes the simulated card portfolio uses, keyed by the ISO 3166 country that uses them.
COUNTRY_CURRENCY: dict[str, str] = {
    "DE": "EUR",
    "FR": "EUR",
    "ES": "EUR",
    "IT": "EUR",
    "NL": "EUR",
    "GB": "GBP",
    "US": "USD",
    "CH": "CHF",
    "PL": "PLN",
    "SE": "SEK",
    "BR": "BRL",
    "NG": "NGN",
    "RU": "RUB",
}
COUNTRIES: tuple[str, ...] = tuple(COUNTRY_CURRENCY)
CURRENCIES: tuple[str, ...] = tuple(sorted(set(COUNTRY_CURRENCY.values())))

MERCHANT_CATEGORIES: tuple[str, ...] = (
    "grocery",
    "restaurant",
    "fuel",
    "travel",
    "electronics",
    "fashion",
    "entertainment",
    "health",
    "digital_goods",
    "cash_withdrawal",
)
CHANNELS: tuple[str, ...] = ("pos", "online", "atm")

# A single card payment above this is not plausible for the portfolio and is treated as bad data.
MAX_AMOUNT = 50_000.0


@dataclass(frozen=True)
class Column:
    """One column of a dataset: its Arrow type, whether it may be null, and its domain."""

    name: str
    type: pa.DataType
    nullable: bool = False
    domain: tuple[str, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None
    unique: bool = False
    doc: str = ""


@dataclass(frozen=True)
class Dataset:
    """A landed dataset: its name (the landing and lake prefix) and its columns."""

    name: str
    columns: tuple[Column, ...]
    timestamp_column: str
    key_column: str
    doc: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}; columns are {self.names}")

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns])


TIMESTAMP = pa.timestamp("us", tz="UTC")

LABEL = "is_fraud"
"""The target column (in :data:`LABELS`, and in every training or evaluation frame)."""

TRANSACTIONS = Dataset(
    name="transactions",
    timestamp_column="event_timestamp",
    key_column="transaction_id",
    doc="One row per card payment, landed daily by the card processor.",
    columns=(
        Column("transaction_id", pa.string(), unique=True, doc="Unique id of the payment."),
        Column("event_timestamp", TIMESTAMP, doc="When the payment was authorised (UTC)."),
        Column("customer_id", pa.string(), doc="The card holder."),
        Column("merchant_id", pa.string(), doc="The acceptor."),
        Column("amount", pa.float64(), min_value=0.0, max_value=MAX_AMOUNT, doc="Amount in currency."),
        Column("currency", pa.string(), domain=CURRENCIES, doc="ISO 4217 code."),
        Column("country", pa.string(), domain=COUNTRIES, doc="ISO 3166 country of the merchant."),
        Column("merchant_category", pa.string(), domain=MERCHANT_CATEGORIES, doc="Merchant category."),
        Column("channel", pa.string(), domain=CHANNELS, doc="pos, online or atm."),
        Column("card_present", pa.bool_(), doc="Whether the card was physically present."),
        Column(
            "card_country",
            pa.string(),
            domain=COUNTRIES,
            doc="ISO 3166 country that issued the card (known from its BIN): the card holder's home.",
        ),
    ),
)

LABELS = Dataset(
    name="labels",
    timestamp_column="reported_at",
    key_column="transaction_id",
    doc="Fraud outcome of a payment, known days after it (chargeback or settlement).",
    columns=(
        Column("transaction_id", pa.string(), unique=True, doc="The labelled payment."),
        Column(LABEL, pa.int8(), domain=None, min_value=0, max_value=1, doc="1 if fraud."),
        Column("reported_at", TIMESTAMP, doc="When the outcome became known (UTC)."),
    ),
)

DATASETS: dict[str, Dataset] = {d.name: d for d in (TRANSACTIONS, LABELS)}

MAX_LABEL_DELAY_DAYS = 5
"""The label delay of the contract: the label of a payment of day ``D`` is reported in one of the
labels partitions ``D+1 .. D+5``, so day ``D`` is fully labelled once ``D+5`` has landed."""


def pandas_dtypes(dataset: Dataset) -> dict[str, str]:
    """The pandas dtype of each column, for readers that do not go through Arrow (CSV)."""
    mapping = {
        pa.string(): "string",
        pa.float64(): "float64",
        pa.int8(): "int8",
        pa.bool_(): "bool",
        TIMESTAMP: "datetime64[us, UTC]",
    }
    return {c.name: mapping[c.type] for c in dataset.columns}


# The predictions partition: written by scoring, read by the drift monitor and the demo.

PREDICTION_KEYS: tuple[str, ...] = ("transaction_id", "event_timestamp", "customer_id", "merchant_id")
"""The payment's keys, first in every predictions row."""

SCORE_CHAMPION = "score_champion"
"""The champion's fraud probability."""

FLAGGED_CHAMPION = "flagged_champion"
"""Whether :data:`SCORE_CHAMPION` is at or above the champion's operating threshold (the version
tag ``operating_threshold``): the payment would be declined. Null when that version records no
threshold, so that no reader mistakes "no decision" for "not flagged"."""

SCORE_CHALLENGER = "score_challenger"
"""The shadow challenger's fraud probability (NaN without a distinct challenger)."""

CHAMPION_VERSION = "champion_version"
"""The registered version that gave :data:`SCORE_CHAMPION`."""

CHALLENGER_VERSION = "challenger_version"
"""The registered version that gave :data:`SCORE_CHALLENGER`, or :data:`NO_CHALLENGER`."""

NO_CHALLENGER = -1
""":data:`CHALLENGER_VERSION` of a day scored without a distinct challenger."""
