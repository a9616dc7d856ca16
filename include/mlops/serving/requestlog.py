"""The request log: every scored payment written to the lake, in the background.

``$MLOPS_LAKE_URL/serving_requests/dt=DAY/part-<time>-<random>.parquet``: one partition per payment
day (the day of its ``event_timestamp``, as the transactions and predictions are split), growing
by one uniquely named file per flush (:func:`include.mlops.lake.new_data_file`), each written
atomically, so readers see whole files only and several pods can write the same day. A flush
happens when ``MLOPS_SERVING_LOG_BATCH_ROWS`` payments wait, at least every
``MLOPS_SERVING_LOG_FLUSH_SECONDS`` while some do, and when the service stops.

The log never fails a request: the queue is bounded (``MLOPS_SERVING_LOG_QUEUE``), and a full
queue or a failed write loses those rows with a warning.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING

from include.mlops import lake
from include.mlops.core.settings import resolve_settings
from include.mlops.serving.records import log_table
from include.mlops.serving.workers import BackgroundWorker

if TYPE_CHECKING:
    import pyarrow as pa

    from include.mlops.core.settings import Settings
    from include.mlops.serving.records import ScoredBatch

logger = logging.getLogger(__name__)


def request_log_partition(day: dt.date, settings: Settings | None = None) -> lake.Location:
    """The request log's partition of ``day`` in the lake."""
    return lake.partition("lake", lake.SERVING_REQUESTS, day, resolve_settings(settings))


def request_log_days(settings: Settings | None = None) -> list[dt.date]:
    """The days the request log has a partition for, sorted."""
    return lake.partition_days(lake.root("lake", resolve_settings(settings)), lake.SERVING_REQUESTS)


def read_request_log(day: dt.date, settings: Settings | None = None) -> pa.Table | None:
    """Every logged payment of ``day`` (all its files) as one table; ``None`` when there is none."""
    return lake.read_table(request_log_partition(day, settings))


class RequestLog(BackgroundWorker):
    """Writes :class:`~include.mlops.serving.records.ScoredBatch` es to the lake in batches."""

    def __init__(
        self,
        capacity: int,
        batch_rows: int,
        flush_seconds: float,
        settings: Settings | None = None,
    ) -> None:
        super().__init__("request log", capacity, wait_seconds=min(1.0, flush_seconds))
        self.settings = resolve_settings(settings)
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.written_rows = 0
        self.files: list[str] = []
        """The files written so far (URLs), oldest first."""
        self._pending: list[ScoredBatch] = []
        self._pending_rows = 0
        self._oldest = 0.0
        self._stopping = False

    def handle(self, item: ScoredBatch) -> None:
        """Keep the batch; flush if enough rows wait."""
        if not self._pending:
            self._oldest = time.monotonic()
        self._pending.append(item)
        self._pending_rows += len(item)
        if self._pending_rows >= self.batch_rows:
            self.flush()
        else:
            self.idle()

    def idle(self) -> None:
        """Flush when the oldest waiting rows have waited ``flush_seconds`` (or when stopping)."""
        if self._pending and (self._stopping or time.monotonic() - self._oldest >= self.flush_seconds):
            self.flush()

    def stop(self, timeout: float = 60.0) -> None:
        """Write what waits, then end the thread."""
        self._stopping = True
        super().stop(timeout)

    def flush(self) -> None:
        """Write the waiting rows: one new file per payment day. A failed write loses its rows, with
        a warning (the others are still written)."""
        import pyarrow.compute as pc

        if not self._pending:
            return
        pending, self._pending, self._pending_rows = self._pending, [], 0
        try:
            table = log_table(pending)
        except Exception as error:
            self.lost(sum(map(len, pending)), f"{type(error).__name__}: {error}")
            return
        days = pc.cast(pc.cast(table.column("event_timestamp"), "date32"), "string")
        for text in sorted(set(days.to_pylist())):
            rows = table.filter(pc.equal(days, text))
            day = dt.date.fromisoformat(text)
            try:
                file = lake.new_data_file(request_log_partition(day, self.settings))
                lake.write_bytes(file, lake.encode_parquet(rows))
            except Exception as error:
                self.lost(
                    rows.num_rows, f"writing the request log of {day} failed: {type(error).__name__}: {error}"
                )
                continue
            self.written_rows += rows.num_rows
            self.files.append(file.url)
            logger.debug("request log: %s payments of %s written to %s", rows.num_rows, day, file.url)
