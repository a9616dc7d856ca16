"""The predictions partition as the monitor reads it: its columns and a deterministic sample.

The partition is written by scoring, one per day: the payment's id, the served features, the
champion's score and the version that produced it. The monitor compares a sample of at most
``sample_rows`` payments, picked by a fixed hash of the id and ``MLOPS_SEED``: a 1M-row day costs
what a 50k-row day costs, with the same verdict, and a rerun picks the same payments.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from include.mlops.core.schema import CHAMPION_VERSION, SCORE_CHAMPION, TRANSACTIONS

if TYPE_CHECKING:
    import datetime as dt

    import numpy as np
    import pyarrow as pa


ID = TRANSACTIONS.key_column
"""The predictions partition's column: the payment's id."""

SCORE = SCORE_CHAMPION
"""The predictions partition's column: the champion's score."""

VERSION = CHAMPION_VERSION
"""The predictions partition's column: the model version that scored the row."""


def sample_positions(ids: pa.ChunkedArray | pa.Array, n: int, seed: int) -> np.ndarray | None:
    """Positions of the ``n`` rows with the smallest hash of their id (``None``: keep every row).

    The hash depends on the id and ``seed`` only, so the same payments are picked whatever the
    row order; the positions come back sorted.
    """
    import numpy as np
    import pandas as pd

    if len(ids) <= n:
        return None
    key = hashlib.sha256(f"mlops-drift-{seed}".encode()).hexdigest()[:16]
    hashed = pd.util.hash_array(np.asarray(ids.to_numpy(zero_copy_only=False), dtype=object), hash_key=key)
    return np.sort(np.argpartition(hashed, n - 1)[:n])


def day_version(table: pa.Table, day: dt.date) -> int:
    """The model version that scored most of ``day``'s rows (should the partition hold several).

    Raises ``RuntimeError`` when the table is empty: an empty day has nothing to monitor.
    """
    import pyarrow.compute as pc

    counts = pc.value_counts(table.column(VERSION)).to_pylist()
    if not counts:
        raise RuntimeError(f"the predictions of {day} are empty: nothing to monitor")
    return int(max(counts, key=lambda c: c["counts"])["values"])
