"""Batched, non-blocking metric logging: training threads hand values over and move on.

Why: a training step must never wait on (or die of) the database. `log()` only appends to an
in-memory queue; a daemon thread writes batches with the idempotent `Database.insert_metrics`,
retries failures a few times, then drops the batch and records why (`last_error`, `dropped_rows`,
the `logging` module). The values of one `log()` call are always written in the same transaction,
so a reader that saw step S of a run saw every value logged with it in that call.
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from minillm_dash.db_schema import NAME_MAX

if TYPE_CHECKING:
    from minillm_dash.db import Database

log = logging.getLogger(__name__)

Row = tuple[int, int, str, float, float]  # (run_id, step, name, value, wall_time)


class MetricWriter:
    """Queue + background thread in front of `Database.insert_metrics`; thread-safe, one per run or shared."""

    def __init__(
        self,
        db: Database,
        flush_interval: float = 0.5,
        max_batch: int = 5000,
        *,
        retries: int = 3,
        retry_delay: float = 0.1,
        name: str = "metric-writer",
    ) -> None:
        self.db = db
        self.flush_interval = float(flush_interval)
        self.max_batch = max(1, int(max_batch))
        self.retries = max(0, int(retries))
        self.retry_delay = float(retry_delay)
        # Inspectable state (read freely; written by the writer thread or under the lock).
        self.last_error: BaseException | None = None
        self.dropped_rows = 0        # rows given up after retries, or logged after close()
        self.rejected_values = 0     # values that were not numbers / bad metric names
        self.rows_written = 0        # rows sent to the database successfully (duplicates included)
        self.batches = 0
        self.slowest_batch_s = 0.0   # longest single successful insert
        self.total_write_s = 0.0

        self._pending: deque[list[Row]] = deque()   # one list per log() call: never split
        self._pending_rows = 0
        self._logged = 0      # rows accepted by log()
        self._settled = 0     # rows written or dropped
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stopping = False
        self._closed = False
        self._warned_names: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()
        # Written rows should survive a normal interpreter exit even if nobody called close().
        self._atexit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._atexit)

    # ------------------------------------------------------------------ producer side
    def log(self, run_id: int, step: int, values: dict[str, Any], wall_time: float | None = None) -> None:
        """Queue one step's values; returns at once and never raises (problems are logged/counted)."""
        try:
            rows = self._to_rows(run_id, step, values, wall_time)
            if not rows:
                return
            with self._lock:
                if self._closed:
                    self.dropped_rows += len(rows)
                    self._logged += len(rows)
                    self._settled += len(rows)
                    closed = True
                else:
                    self._pending.append(rows)
                    self._pending_rows += len(rows)
                    self._logged += len(rows)
                    closed = False
                    full = self._pending_rows >= self.max_batch
            if closed:
                log.warning("MetricWriter closed: dropped %d value(s) of run %s step %s",
                            len(rows), run_id, step)
            elif full:
                self._wake.set()
        except Exception as exc:  # noqa: BLE001 - logging must never kill training
            self.last_error = exc
            log.exception("MetricWriter.log(run %r, step %r) failed", run_id, step)

    def _to_rows(self, run_id: int, step: int, values: dict[str, Any], wall_time: float | None) -> list[Row]:
        """Validate and convert; a bad value is skipped (counted, warned once per name), not fatal."""
        rid, st = int(run_id), int(step)
        wt = time.time() if wall_time is None else float(wall_time)
        if not math.isfinite(wt):  # would fail the whole batch (NOT NULL); the arrival time will do
            log.warning("run %s step %s: wall_time %r replaced by the current time", run_id, step, wall_time)
            wt = time.time()
        rows: list[Row] = []
        for name, value in values.items():
            try:
                if not isinstance(name, str) or not 0 < len(name) <= NAME_MAX:
                    raise ValueError(f"metric name must be a non-empty string of at most {NAME_MAX} characters")
                rows.append((rid, st, name, float(value), wt))
            except (TypeError, ValueError) as exc:
                self._reject(name, value, exc)
        return rows

    def _reject(self, name: object, value: object, exc: Exception) -> None:
        with self._lock:
            self.rejected_values += 1
            first = str(name) not in self._warned_names
            self._warned_names.add(str(name))
        if first:
            log.warning("metric %r: value %r not stored (%s); further ones of this name counted silently",
                        name, value, exc)

    # ------------------------------------------------------------------ control
    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything logged before this call is written (or dropped). False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._logged
        self._wake.set()
        with self._progress:
            while self._settled < target:
                if not self._thread.is_alive():
                    log.error("MetricWriter thread is not running; %d row(s) unwritten", target - self._settled)
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._progress.wait(0.2 if remaining is None else min(0.2, remaining))
        return True

    def close(self, timeout: float | None = None) -> None:
        """Flush, stop the thread; later log() calls are counted as dropped. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        atexit.unregister(self._atexit)

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def stats(self) -> dict[str, Any]:
        """Counters for the UI / tests: logged, written, dropped, rejected, batches, timings, last error."""
        return {
            "rows_logged": self._logged, "rows_written": self.rows_written,
            "rows_dropped": self.dropped_rows, "values_rejected": self.rejected_values,
            "pending_rows": self._pending_rows, "batches": self.batches,
            "slowest_batch_s": self.slowest_batch_s, "total_write_s": self.total_write_s,
            "last_error": None if self.last_error is None else repr(self.last_error),
        }

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writer thread
    def _loop(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                while batch := self._take_batch():
                    self._write(batch)
            except Exception as exc:  # noqa: BLE001 - keep the thread alive whatever happens
                self.last_error = exc
                log.exception("MetricWriter thread error")
            with self._lock:
                if self._stopping and not self._pending:
                    return

    def _take_batch(self) -> list[Row]:
        """Whole log() groups up to max_batch rows (a single larger group goes alone)."""
        batch: list[Row] = []
        with self._lock:
            while self._pending and (not batch or len(batch) + len(self._pending[0]) <= self.max_batch):
                group = self._pending.popleft()
                self._pending_rows -= len(group)
                batch.extend(group)
        return batch

    def _write(self, rows: list[Row]) -> None:
        """Insert with retries; rows of runs deleted meanwhile are dropped; settle the count at the end."""
        total = len(rows)
        try:
            for attempt in range(self.retries + 1):
                try:
                    t0 = time.perf_counter()
                    self.db.insert_metrics(rows)
                    self._record_success(len(rows), time.perf_counter() - t0)
                    return
                except IntegrityError as exc:
                    rows = self._without_deleted_runs(rows, exc)
                    if not rows:
                        return
                    if attempt == self.retries:
                        self._give_up(rows, exc)
                except Exception as exc:  # noqa: BLE001 - reported below, never propagated
                    if attempt == self.retries:
                        self._give_up(rows, exc)
                    else:
                        log.warning("metric batch of %d row(s) failed (attempt %d/%d), retrying: %s",
                                    len(rows), attempt + 1, self.retries + 1, exc)
                        time.sleep(self.retry_delay * (2 ** attempt))
        finally:
            with self._progress:
                self._settled += total
                self._progress.notify_all()

    def _record_success(self, n: int, seconds: float) -> None:
        self.rows_written += n
        self.batches += 1
        self.total_write_s += seconds
        self.slowest_batch_s = max(self.slowest_batch_s, seconds)

    def _give_up(self, rows: list[Row], exc: BaseException) -> None:
        self.last_error = exc
        self.dropped_rows += len(rows)
        runs = sorted({r[0] for r in rows})
        log.error("dropped %d metric row(s) of run(s) %s after %d attempts: %s",
                  len(rows), runs, self.retries + 1, exc)

    def _without_deleted_runs(self, rows: list[Row], exc: IntegrityError) -> list[Row]:
        """A foreign-key failure means a run was deleted while it still logged: drop its rows only."""
        try:
            alive = self.db.existing_run_ids({r[0] for r in rows})
        except Exception as inner:  # noqa: BLE001
            log.warning("could not check which runs still exist after %s: %s", exc, inner)
            return rows
        kept = [r for r in rows if r[0] in alive]
        gone = len(rows) - len(kept)
        if gone:
            self.dropped_rows += gone
            log.warning("dropped %d metric row(s) of deleted run(s) %s", gone,
                        sorted({r[0] for r in rows if r[0] not in alive}))
        return kept


def _close_at_exit(ref: weakref.ref[MetricWriter]) -> None:
    writer = ref()
    if writer is not None:
        writer.close(timeout=10)

