"""A background worker with a bounded queue: what the service does off the response path.

The response path only ever calls :meth:`BackgroundWorker.offer`, which never blocks and never
raises: when the queue is full the item is dropped and counted, and a warning says how many were
lost (at most once a minute), so a slow disk or a burst can cost log records but never a request.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sized

logger = logging.getLogger(__name__)

WARN_EVERY_SECONDS = 60.0
"""A worker's warnings about lost items come at most this often (the count is kept in between)."""

_STOP = object()


class BackgroundWorker:
    """A daemon thread taking items from a bounded queue; subclasses define :meth:`handle`.

    ``capacity`` counts the rows of the queued items (``len(item)``), not the items.
    """

    def __init__(self, name: str, capacity: int, wait_seconds: float = 1.0) -> None:
        self.name = name
        self.capacity = capacity
        self.wait_seconds = wait_seconds
        self.dropped = 0
        """Rows lost so far because the queue was full or :meth:`handle` failed."""
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._queued_rows = 0
        self._lock = threading.Lock()
        self._unreported = 0
        self._last_warning = 0.0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._run, name=f"mlops-{self.name}", daemon=True)
        self._thread.start()

    def offer(self, item: Sized) -> bool:
        """Queue ``item`` if there is room; otherwise drop it with a (rate-limited) warning."""
        rows = len(item)
        with self._lock:
            if self._queued_rows + rows > self.capacity:
                full = True
            else:
                full = False
                self._queued_rows += rows
        if full:
            self.lost(rows, f"its queue is full ({self.capacity} rows)")
            return False
        self._queue.put(item)
        return True

    def lost(self, rows: int, why: str) -> None:
        """Count ``rows`` as lost and warn, at most once every :data:`WARN_EVERY_SECONDS`."""
        with self._lock:
            self.dropped += rows
            self._unreported += rows
            now = time.monotonic()
            if now - self._last_warning < WARN_EVERY_SECONDS:
                return
            self._last_warning, count, self._unreported = now, self._unreported, 0
        logger.warning("%s: %s rows lost: %s", self.name, count, why)

    def _run(self) -> None:
        try:
            self.setup()
        except Exception as error:
            logger.warning("%s: set-up failed: %s: %s", self.name, type(error).__name__, error)
        stopping = False
        while not stopping:
            items, stopping = self._take()
            try:
                if items:
                    self.handle_all(items)
                if not items or stopping:
                    self.idle()
            except Exception as error:
                self.lost(sum(map(len, items)), f"{type(error).__name__}: {error}")

    def _take(self) -> tuple[list[Any], bool]:
        """What has queued (waiting up to ``wait_seconds`` for a first item), and whether to stop."""
        items: list[Any] = []
        try:
            item = self._queue.get(timeout=self.wait_seconds)
            while True:
                if item is _STOP:
                    return items, True
                items.append(item)
                with self._lock:
                    self._queued_rows -= len(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            return items, False

    def handle_all(self, items: list[Any]) -> None:
        """Process what was queued together (by default, one :meth:`handle` each)."""
        for item in items:
            self.handle(item)

    def setup(self) -> None:
        """Called once in the worker's thread before the first item."""

    def handle(self, item: Any) -> None:
        """Process one queued item (in the worker's thread)."""
        raise NotImplementedError

    def idle(self) -> None:
        """Called when no item came for ``wait_seconds``, and once more when stopping."""

    def stop(self, timeout: float = 60.0) -> None:
        """Process what is queued, run :meth:`idle` a last time, and end the thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout=timeout)
        self._thread = None
