"""MetricWriter: log() is instant and never raises, flush() writes everything, failures are reported."""

from __future__ import annotations

import logging
import math
import time

import pytest

from minillm_dash.db import Database
from minillm_dash.metric_writer import MetricWriter


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'writer.sqlite'}")
    yield database
    database.close()


def _run(db: Database) -> int:
    return db.create_run(db.create_experiment("e", {}), "minillm", 0, {}, 100)


def test_log_is_fast_and_flush_writes_all(db):
    run = _run(db)
    names = [f"m{i}" for i in range(10)]
    durations = []
    with MetricWriter(db, flush_interval=0.05) as writer:
        for step in range(2000):
            t0 = time.perf_counter()
            writer.log(run, step, {n: step * 0.5 for n in names})
            durations.append(time.perf_counter() - t0)
        writer.flush()
        assert db.count_metrics([run]) == 20_000
        stats = writer.stats()
    durations.sort()
    p99, worst = durations[int(len(durations) * 0.99)], durations[-1]
    print(f"\nwriter: 20000 rows written, {db.count_metrics([run])} found; log() p99 {p99 * 1e6:.0f} us, "
          f"max {worst * 1e3:.2f} ms; slowest batch {stats['slowest_batch_s'] * 1e3:.1f} ms in {stats['batches']} batches")
    assert p99 < 0.002  # a dict copy, not a database write
    assert stats["rows_dropped"] == 0 and stats["last_error"] is None
    assert db.max_steps([run]) == {run: 1999}


def test_background_thread_flushes_without_flush_call(db):
    run = _run(db)
    writer = MetricWriter(db, flush_interval=0.05)
    writer.log(run, 1, {"loss": 1.0})
    deadline = time.monotonic() + 5
    while db.count_metrics([run]) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert db.count_metrics([run]) == 1
    writer.close()


def test_nan_and_inf_round_trip_through_writer(db):
    run = _run(db)
    with MetricWriter(db, flush_interval=0.05) as writer:
        writer.log(run, 7, {"nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"), "ok": 1.5}, wall_time=42.0)
        writer.flush()
    got = {r[2]: r for r in db.metric_rows([run])}
    assert math.isnan(got["nan"][3]) and got["inf"][3] == math.inf and got["ninf"][3] == -math.inf
    assert got["ok"][3] == 1.5 and got["ok"][4] == 42.0 and got["ok"][1] == 7


def test_bad_values_are_skipped_not_raised(db, caplog):
    run = _run(db)
    with MetricWriter(db, flush_interval=0.05) as writer:
        writer.log(run, 1, {"loss": 1.0, "text": "abc", "none": None, "": 2.0, "x" * 300: 1.0})
        writer.log("not-an-int", 1, {"loss": 1.0})  # bad run id: logged, not raised
        writer.flush()
        assert writer.rejected_values == 4
        assert isinstance(writer.last_error, ValueError)
    assert [r[2] for r in db.metric_rows([run])] == ["loss"]


def test_write_failure_is_retried_then_reported_not_raised(db, caplog):
    run = _run(db)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE metrics")
    caplog.set_level(logging.WARNING, logger="minillm_dash.metric_writer")
    writer = MetricWriter(db, flush_interval=0.05, retries=2, retry_delay=0.01)
    t0 = time.perf_counter()
    writer.log(run, 1, {"loss": 1.0, "kl": 2.0})
    assert time.perf_counter() - t0 < 0.01
    assert writer.flush(timeout=10)
    assert writer.dropped_rows == 2 and writer.rows_written == 0
    assert "no such table" in str(writer.last_error)
    assert any("dropped 2 metric row(s)" in r.getMessage() for r in caplog.records)
    writer.close()
    print(f"\nfailing db: dropped {writer.dropped_rows} rows, last_error={writer.last_error!r}")


def test_closed_database_is_reported(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'closed.sqlite'}")
    run = _run(database)
    database.close()
    writer = MetricWriter(database, flush_interval=0.05, retries=1, retry_delay=0.01)
    writer.log(run, 1, {"loss": 1.0})
    writer.flush(timeout=10)
    assert writer.dropped_rows == 1 and isinstance(writer.last_error, RuntimeError)
    writer.close()


def test_rows_of_a_deleted_run_are_dropped_others_kept(db):
    gone, kept = _run(db), _run(db)
    db.delete_run(gone)
    with MetricWriter(db, flush_interval=10) as writer:  # one batch with both runs
        writer.log(gone, 1, {"loss": 1.0})
        writer.log(kept, 1, {"loss": 2.0})
        writer.flush()
        assert writer.dropped_rows == 1 and writer.rows_written == 1
    assert db.count_metrics([kept]) == 1


def test_log_after_close_is_counted_not_raised(db):
    run = _run(db)
    writer = MetricWriter(db)
    writer.close()
    writer.close()  # idempotent
    writer.log(run, 1, {"loss": 1.0})
    assert writer.dropped_rows == 1 and writer.flush(timeout=1)


def test_max_batch_never_splits_one_log_call(db):
    run = _run(db)
    with MetricWriter(db, flush_interval=10, max_batch=3) as writer:
        writer.log(run, 1, {f"m{i}": 1.0 for i in range(5)})  # bigger than max_batch: goes alone
        writer.log(run, 2, {"a": 1.0, "b": 2.0})
        writer.log(run, 3, {"a": 1.0, "b": 2.0})
        writer.flush()
        assert writer.batches == 3 and writer.rows_written == 9


def test_non_finite_wall_time_does_not_sink_the_batch(db):
    run = _run(db)
    with MetricWriter(db, flush_interval=10) as writer:
        writer.log(run, 1, {"loss": 1.0}, wall_time=float("nan"))
        writer.log(run, 2, {"loss": 2.0}, wall_time=5.0)
        writer.flush()
        assert writer.dropped_rows == 0 and writer.last_error is None
    rows = db.metric_rows([run])
    assert len(rows) == 2 and math.isfinite(rows[0][4]) and rows[1][4] == 5.0
    with pytest.raises(ValueError):
        db.insert_metrics([(run, 3, "loss", 1.0, float("inf"))])
