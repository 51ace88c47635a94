"""Many training threads write while the UI polls: no "database is locked", no row lost or seen twice.

Writers do what the runner does (a MetricWriter per run, `update_run` progress from the training
thread); readers do what the UI timer does (max_steps, then metric_rows after the last step seen,
every ~50 ms, plus list_runs). A second variant shares one MetricWriter between all threads.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from minillm_dash.db import Database
from minillm_dash.metric_writer import MetricWriter

N_WRITERS = 8
N_READERS = 4
STEPS = 1250
METRICS = [f"m{i}" for i in range(10)]  # 8 x 1250 x 10 = 100,000 rows
TOTAL = N_WRITERS * STEPS * len(METRICS)


class _Collect(logging.Handler):
    """Every warning/error any minillm_dash logger emits during the test."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _writer_thread(db, writer, run_id, durations, errors, start):
    try:
        start.wait()
        for step in range(1, STEPS + 1):
            values = {name: step + i / 100 for i, name in enumerate(METRICS)}
            t0 = time.perf_counter()
            writer.log(run_id, step, values)
            durations.append(time.perf_counter() - t0)
            if step % 50 == 0:
                db.update_run(run_id, step=step)  # the runner's progress/heartbeat write
                time.sleep(0.05)  # a "training step"
    except BaseException as exc:  # noqa: BLE001 - collected and asserted on
        errors.append(("writer", run_id, repr(exc)))


class _Reader:
    """The UI's incremental refresh: remember the last step per run, ask only for newer rows."""

    def __init__(self, db, run_ids):
        self.db, self.run_ids = db, run_ids
        self.last: dict[int, int] = {}
        self.seen: set[tuple[int, str, int]] = set()
        self.duplicates = 0
        self.polls = 0
        self.slowest_poll = 0.0

    def poll(self) -> None:
        t0 = time.perf_counter()
        tops = self.db.max_steps(self.run_ids)
        if any(tops.get(r, -1) > self.last.get(r, -1) for r in self.run_ids):
            for run_id, step, name, _value, _wall in self.db.metric_rows(self.run_ids, after_step=self.last):
                key = (run_id, name, step)
                self.duplicates += key in self.seen
                self.seen.add(key)
                self.last[run_id] = max(self.last.get(run_id, -1), step)
        if self.polls % 10 == 0:
            self.db.list_runs()
        self.polls += 1
        self.slowest_poll = max(self.slowest_poll, time.perf_counter() - t0)

    def loop(self, stop, errors):
        try:
            while not stop.is_set():
                self.poll()
                time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001
            errors.append(("reader", None, repr(exc)))


@pytest.mark.parametrize("pattern", ["writer_per_run", "shared_writer"])
def test_concurrent_writers_and_pollers(tmp_path, pattern):
    db = Database(f"sqlite:///{tmp_path / 'concurrency.sqlite'}")
    handler = _Collect()
    logging.getLogger("minillm_dash").addHandler(handler)
    try:
        exp = db.create_experiment("load", {})
        run_ids = [db.create_run(exp, f"v{i % 4}", i, {}, STEPS, status="running") for i in range(N_WRITERS)]
        shared = MetricWriter(db) if pattern == "shared_writer" else None
        writers = {r: shared or MetricWriter(db, name=f"writer-{r}") for r in run_ids}
        errors: list[tuple] = []
        durations: dict[int, list[float]] = {r: [] for r in run_ids}
        start, stop = threading.Event(), threading.Event()
        readers = [_Reader(db, run_ids) for _ in range(N_READERS)]
        threads = [threading.Thread(target=_writer_thread, args=(db, writers[r], r, durations[r], errors, start))
                   for r in run_ids]
        reader_threads = [threading.Thread(target=rd.loop, args=(stop, errors)) for rd in readers]
        t0 = time.perf_counter()
        for t in threads + reader_threads:
            t.start()
        start.set()
        for t in threads:
            t.join(120)
        for w in set(writers.values()):
            w.close()
        elapsed = time.perf_counter() - t0
        stop.set()
        for t in reader_threads:
            t.join(30)
        for rd in readers:
            rd.poll()  # the refresh after the last write

        found = db.count_metrics(run_ids)
        all_durations = sorted(d for ds in durations.values() for d in ds)
        stats = [w.stats() for w in set(writers.values())]
        slowest_batch = max(s["slowest_batch_s"] for s in stats)
        written = sum(s["rows_written"] for s in stats)
        print(f"\n[{pattern}] {TOTAL} rows logged, {written} written, {found} found in {elapsed:.1f} s; "
              f"slowest batch write {slowest_batch * 1e3:.0f} ms over {sum(s['batches'] for s in stats)} batches; "
              f"log() mean {sum(all_durations) / len(all_durations) * 1e6:.0f} us, "
              f"p99 {all_durations[int(len(all_durations) * 0.99)] * 1e6:.0f} us, max {all_durations[-1] * 1e3:.1f} ms; "
              f"readers: {sum(r.polls for r in readers)} polls, slowest {max(r.slowest_poll for r in readers) * 1e3:.0f} ms, "
              f"rows seen {[len(r.seen) for r in readers]}")

        assert errors == []
        problems = [h.getMessage() for h in handler.records]
        assert problems == [], problems
        assert not any("locked" in p for p in problems)
        for s in stats:
            assert s["rows_dropped"] == 0 and s["last_error"] is None, s
        assert written == TOTAL and found == TOTAL
        assert db.max_steps(run_ids) == {r: STEPS for r in run_ids}
        for rd in readers:
            assert rd.duplicates == 0 and len(rd.seen) == TOTAL  # incremental reads missed nothing
        assert all(db.get_run(r)["step"] == STEPS for r in run_ids)
    finally:
        logging.getLogger("minillm_dash").removeHandler(handler)
        db.close()
