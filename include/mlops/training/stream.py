"""The features of a training run in compact blocks, read from Feast chunk by chunk and fed to XGBoost
batch by batch, so that memory holds one chunk's join and never a frame of the whole window.

The training rows (fit rows, then validation rows) and the OOT rows each keep their features in one
float32 matrix, allocated once the row count is known and filled by :func:`read_features`, one
chunk of ``MLOPS_CHUNK_ROWS`` rows at a time (:func:`~include.mlops.features.features_in_chunks`).
float32 is what XGBoost computes with: it casts every input to float32 itself, so the model sees
the same numbers as from a float64 frame, in half the memory (a quarter of a pandas frame with its
Python strings).

XGBoost reads a set through an ``xgboost.DataIter`` over row blocks of the matrix into a
``QuantileDMatrix`` (:func:`quantile_matrix`); the validation set takes the fit set's cuts
(``ref=``), and the OOT rows are scored block by block (:func:`predict_in_batches`). On the CPU,
XGBoost first counts each feature's values over every batch, then pushes the batches in row order
into one quantile sketch per feature: the cuts, hence the booster, are those of the same rows given
in one piece (``tests/unit/training/test_stream.py`` checks it).

External memory (``ExtMemQuantileDMatrix``) would refetch the batches at every tree level; the
compressed matrix (one byte per value with 256 bins) fits in memory at the training caps, and
XGBoost's documentation recommends the in-memory ``QuantileDMatrix`` whenever it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops import features

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from include.mlops.core.settings import Settings


_FEAST_COLUMNS = (*features.ENTITY_KEYS, *features.REQUEST_FIELDS)
"""The payment columns a chunk is joined with."""


@dataclass(frozen=True)
class FeatureRows:
    """Rows of one set of a training run: their features (a float32 matrix, one row per payment, in
    the set's order), their labels and weights, and the rows per batch XGBoost reads them in."""

    x: np.ndarray
    """``(rows, features)`` float32, C order."""
    y: np.ndarray
    """The label of each row (int32)."""
    weight: np.ndarray | None
    """The sample weight of each row (float64); ``None`` for unweighted rows (the OOT days)."""
    columns: tuple[str, ...]
    batch_rows: int
    """Rows per batch given to XGBoost and to the scorers (the chunk size)."""

    def __len__(self) -> int:
        return len(self.y)

    @classmethod
    def of(
        cls, x: Any, y: np.ndarray, weight: np.ndarray | None, columns: tuple[str, ...] | None = None
    ) -> FeatureRows:
        """Rows from a frame or an array already in memory, as one batch (columns from the frame)."""
        import numpy as np

        names = tuple(columns if columns is not None else x.columns)
        matrix = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        w = None if weight is None else np.asarray(weight, dtype=np.float64)
        return cls(matrix, np.asarray(y, dtype=np.int32), w, names, max(1, len(matrix)))

    def part(self, start: int, stop: int) -> FeatureRows:
        """Rows ``start .. stop - 1`` (views, no copy)."""
        w = None if self.weight is None else self.weight[start:stop]
        return FeatureRows(self.x[start:stop], self.y[start:stop], w, self.columns, self.batch_rows)

    def batches(self) -> Iterator[FeatureRows]:
        """The rows in consecutive batches of at most :attr:`batch_rows` rows (views, no copy)."""
        for start in range(0, len(self), self.batch_rows):
            yield self.part(start, min(start + self.batch_rows, len(self)))

    def frame(self) -> pd.DataFrame:
        """The features as a float32 frame over the same memory (no copy), named by :attr:`columns`."""
        import pandas as pd

        return pd.DataFrame(self.x, columns=list(self.columns), copy=False)


def _arrow_strings(arrow_type: pa.DataType) -> Any:
    """pandas' Arrow-backed string type for Arrow strings (no Python object per value), else None."""
    import pandas as pd
    import pyarrow as pa

    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype("pyarrow")
    return None


def _feast_frame(table: pa.Table) -> pd.DataFrame:
    """The columns of ``table`` a point-in-time join needs, as pandas over Arrow's memory: strings
    stay Arrow strings (no Python object per value), numbers and timestamps are copied."""
    present = [c for c in _FEAST_COLUMNS if c in table.column_names]
    return table.select(present).to_pandas(types_mapper=_arrow_strings)


def spill_rows(table: pa.Table, folder: str) -> str:
    """Write ``table`` to an Arrow file in ``folder``; its path, for :func:`mapped_rows`.

    Strings are written as large strings, the layout of pandas' Arrow strings, so that frames of
    the mapped rows (:func:`frame_with_features`) wrap the file's pages instead of rebuilding
    their offsets.
    """
    import uuid
    from pathlib import Path

    import pyarrow as pa

    fields = [f.with_type(pa.large_string()) if pa.types.is_string(f.type) else f for f in table.schema]
    schema = pa.schema(fields, metadata=table.schema.metadata)
    path = str(Path(folder) / f"rows-{uuid.uuid4().hex}.arrow")
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for batch in table.to_batches():
            writer.write_batch(batch.cast(schema))
    return path


def mapped_rows(path: str) -> pa.Table:
    """The rows :func:`spill_rows` wrote, memory-mapped: no copy in this process's memory; the
    system reads a page in when it is used and may drop it again. Each call maps the file afresh,
    without the pages earlier mappings read. The file may be deleted once mapped: the mapping keeps
    its data until the table is freed."""
    import pyarrow as pa

    return pa.ipc.open_file(pa.memory_map(path)).read_all()


def read_features(
    rows: pa.Table | str,
    columns: tuple[str, ...],
    chunk_rows: int,
    settings: Settings | None = None,
    keep: np.ndarray | None = None,
) -> tuple[np.ndarray, pd.DataFrame | None]:
    """The point-in-time features of the payments ``rows``, in their order, as one float32 matrix
    filled ``chunk_rows`` rows at a time; with ``keep`` (sorted row positions), also those rows as
    Feast served them (the columns of the join and the features in Feast's types, by position).

    ``rows``: a table, or the path of rows written by :func:`spill_rows`, mapped afresh for each
    chunk so that the pages one join read are let go before the next. Each value goes through
    float64 first, as the frames of a whole window did, so every float32 is the one XGBoost would
    have made of that frame.
    """
    import numpy as np
    import pandas as pd

    def table() -> pa.Table:
        return mapped_rows(rows) if isinstance(rows, str) else rows

    total = table().num_rows
    x = np.empty((total, len(columns)), dtype=np.float32)
    kept, filled = [], 0
    for start in range(0, max(total, 1), chunk_rows):
        part = _feast_frame(table().slice(start, chunk_rows))
        for chunk in features.features_in_chunks(part, chunk_rows, settings):
            stop = filled + len(chunk)
            for j, name in enumerate(columns):  # a column at a time: no float64 copy of the chunk
                x[filled:stop, j] = chunk[name].astype("float64").to_numpy()
            if keep is not None:
                inside = keep[(keep >= filled) & (keep < stop)]
                kept.append(chunk.iloc[inside - filled].set_axis(inside))
            filled = stop
    if filled != total:
        raise RuntimeError(f"the feature chunks held {filled} rows for {total} payments")
    release_arrow_memory()
    return x, (None if keep is None else pd.concat(kept))


def release_arrow_memory() -> None:
    """Give back to the system what Arrow's allocator kept of the tables freed so far (a lake day
    of a million payments leaves about 600 MiB there): numpy's matrices cannot reuse it."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def frame_with_features(table: pa.Table, x: np.ndarray, columns: tuple[str, ...]) -> pd.DataFrame:
    """``table`` as a frame over Arrow's strings, with the features of ``x`` beside it (views, no
    copy): the rows as a dataset to log, at the cost of their numeric columns only."""
    import pandas as pd

    frame = table.to_pandas(types_mapper=_arrow_strings)
    return pd.concat([frame, pd.DataFrame(x, columns=list(columns), copy=False)], axis=1, copy=False)


def _batch_iterator(rows: FeatureRows) -> Any:
    """An ``xgboost.DataIter`` that hands ``rows`` to XGBoost batch by batch (views, no copy)."""
    import xgboost as xgb

    names = list(rows.columns)
    types = ["float"] * len(names)  # what XGBoost records for a float64 pandas column

    class Batches(xgb.DataIter):
        """The batches of ``rows``, from the first again after each reset."""

        def __init__(self) -> None:
            super().__init__(release_data=True)
            self.parts = list(rows.batches())
            self.at = 0

        def next(self, input_data: Callable[..., None]) -> bool:
            if self.at == len(self.parts):
                return False
            part = self.parts[self.at]
            input_data(
                data=part.x, label=part.y, weight=part.weight, feature_names=names, feature_types=types
            )
            self.at += 1
            return True

        def reset(self) -> None:
            self.at = 0

    return Batches()


def quantile_matrix(rows: FeatureRows, max_bin: int, threads: int, ref: Any = None) -> Any:
    """``rows`` as an ``xgboost.QuantileDMatrix`` built batch by batch; ``ref``: the training set's
    matrix, whose cuts a validation set must share."""
    import xgboost as xgb

    return xgb.QuantileDMatrix(_batch_iterator(rows), max_bin=max_bin, nthread=threads, ref=ref)


def predict_in_batches(predict: Callable[[np.ndarray], Any], rows: FeatureRows) -> np.ndarray:
    """``predict`` applied to each batch of ``rows``, as one float64 array (a score per row)."""
    import numpy as np

    scores = [np.asarray(predict(part.x), dtype=np.float64).reshape(-1) for part in rows.batches()]
    return np.concatenate(scores) if scores else np.empty(0, dtype=np.float64)
