"""Database: CRUD, dataset dedupe, idempotent metrics, incremental reads, recovery, safety (real SQLite files)."""

from __future__ import annotations

import dataclasses
import math
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from minillm_dash.db import Database, DatabaseOpenError, decode_value, encode_value


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'test.sqlite'}")
    yield database
    database.close()


def _run(db: Database, variant: str = "minillm", seed: int = 0) -> tuple[int, int]:
    exp = db.create_experiment("exp", {"steps": 10})
    return exp, db.create_run(exp, variant, seed, {"lr": 1e-4}, total_steps=10)


def _rows(run_id: int, steps: range, names=("loss", "kl")) -> list[tuple]:
    return [(run_id, s, n, float(s) + i / 10, 1000.0 + s) for s in steps for i, n in enumerate(names)]


def test_default_url_uses_storage_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLM_DASH_STORAGE", str(tmp_path / "nested" / "storage"))
    monkeypatch.delenv("MINILLM_DASH_DB", raising=False)
    with Database() as database:
        assert database.is_sqlite
        assert (tmp_path / "nested" / "storage" / "minillm_dash.sqlite").exists()


def test_wal_mode_busy_timeout_and_foreign_keys(db, tmp_path):
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    # WAL is a property of the file: a plain sqlite3 connection sees it too.
    raw = sqlite3.connect(tmp_path / "test.sqlite")
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


def test_schema_created_once_reopen_keeps_data(tmp_path):
    url = f"sqlite:///{tmp_path / 'again.sqlite'}"
    with Database(url) as first:
        exp, run = _run(first)
    with Database(url) as second:
        assert second.get_run(run)["experiment_id"] == exp


def test_safe_url_hides_password():
    url = "postgresql+psycopg2://alice:s3cr3t-pw@127.0.0.1:1/nodb"
    with pytest.raises(DatabaseOpenError) as info:
        Database(url)  # nothing listens on port 1: the error must not show the password
    assert "s3cr3t-pw" not in str(info.value)
    assert "alice:***@127.0.0.1" in str(info.value)


def test_safe_url_and_repr_mask_password(db):
    assert "***" not in db.safe_url  # no password, nothing to mask
    from minillm_dash.db import _parse_url

    masked = _parse_url("postgresql+psycopg2://bob:hunter2@db.example/x").render_as_string(hide_password=True)
    assert "hunter2" not in masked and "bob:***@" in masked
    assert repr(db) == f"Database({db.safe_url!r})"


def test_unparsable_url_does_not_echo_it():
    with pytest.raises(DatabaseOpenError) as info:
        Database("not a url with password=topsecret")
    assert "topsecret" not in str(info.value)


def test_dataset_dedupe_get_list_delete(db):
    rows = [{"prompt": "hi", "messages": None, "reference": "hello", "source_line": 1},
            {"prompt": "2+2?", "messages": None, "reference": None, "source_line": 2}]
    first = db.add_dataset(name="a.jsonl", content_hash="h1", detected_format="jsonl:prompt/response",
                           fields=["prompt", "response"], rows=rows)
    again = db.add_dataset(name="renamed.jsonl", content_hash="h1", detected_format="x", fields=[], rows=[])
    assert again == first
    other = db.add_dataset(name="b.csv", content_hash="h2", detected_format="csv", fields=["prompt"], rows=rows[1:])
    assert other != first
    got = db.get_dataset(first)
    assert got["rows"] == rows and got["n_rows"] == 2 and got["has_references"] is True
    assert got["fields"] == ["prompt", "response"] and got["name"] == "a.jsonl"
    listed = db.list_datasets()
    assert [d["id"] for d in listed] == [first, other] and "rows" not in listed[0]
    assert db.get_dataset(other)["has_references"] is False
    assert db.find_dataset("h2") == other
    assert db.delete_dataset(first) and not db.delete_dataset(first)
    assert db.get_dataset(first) is None


def test_add_dataset_accepts_a_dataset_object(db):
    @dataclasses.dataclass(frozen=True)
    class Rec:
        prompt: str | None
        messages: tuple | None
        reference: str | None
        source_line: int

    @dataclasses.dataclass(frozen=True)
    class DS:
        name: str
        records: tuple
        detected_format: str
        fields: tuple
        content_hash: str

        @property
        def has_references(self) -> bool:
            return any(r.reference for r in self.records)

    ds = DS("chat.jsonl", (Rec(None, ({"role": "user", "content": "hi"},), "yo", 1),), "jsonl:messages",
            ("messages",), "abc")
    dataset_id = db.add_dataset(ds)
    got = db.get_dataset(dataset_id)
    assert got["rows"] == [{"prompt": None, "messages": [{"role": "user", "content": "hi"}],
                            "reference": "yo", "source_line": 1}]
    assert got["has_references"] is True and db.add_dataset(ds) == dataset_id


def test_experiment_and_run_crud(db):
    exp, run = _run(db)
    run2 = db.create_run(exp, "fkl", 1, {"lr": 2e-4}, total_steps=5)
    assert [e["id"] for e in db.list_experiments()] == [exp]
    assert db.list_experiments()[0]["n_runs"] == 2
    assert db.get_experiment(exp)["config"] == {"steps": 10}
    r = db.get_run(run)
    assert (r["variant"], r["seed"], r["config"], r["status"], r["total_steps"]) == ("minillm", 0, {"lr": 1e-4}, "queued", 10)
    assert [x["id"] for x in db.list_runs(exp)] == [run, run2]
    assert db.list_runs(exp + 99) == []

    t = time.time()
    assert db.update_run(run, status="running", started_at=t, device="cpu", step=3)
    r = db.get_run(run)
    assert (r["status"], r["started_at"], r["device"], r["step"]) == ("running", t, "cpu", 3)
    assert r["heartbeat_at"] is not None
    before = r["heartbeat_at"]
    time.sleep(0.01)
    assert db.update_run(run)  # heartbeat only
    assert db.get_run(run)["heartbeat_at"] > before
    assert db.update_run(9999, status="done") is False
    with pytest.raises(ValueError):
        db.update_run(run, status="exploded")
    with pytest.raises(TypeError):
        db.update_run(run, variant="x")


def dead_owner() -> str:
    """The owner string of a process that has exited (and been reaped) on this host."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return f"{socket.gethostname()}:{int(proc.stdout)}"


def test_mark_interrupted(db):
    exp, running = _run(db)
    queued = db.create_run(exp, "fkl", 0, {}, 10)
    done = db.create_run(exp, "rkl", 0, {}, 10)
    db.update_run(running, status="running")
    db.update_run(done, status="done")
    assert db.mark_interrupted() == 0  # owned by this live process: a concurrent dashboard/CLI is left alone
    for rid in (running, queued, done):
        db.update_run(rid, owner=dead_owner())
    assert db.mark_interrupted() == 2
    for rid in (running, queued):
        r = db.get_run(rid)
        assert r["status"] == "interrupted" and "process running it stopped" in r["error"] and r["finished_at"]
    assert db.get_run(done)["status"] == "done"
    assert db.mark_interrupted() == 0


def test_runs_of_other_hosts_are_left_alone(db):
    exp, running = _run(db)
    db.update_run(running, status="running", owner="some-other-host:1")
    assert db.mark_interrupted() == 0 and db.get_run(running)["status"] == "running"


def test_idempotent_metric_insert(db):
    _, run = _run(db)
    rows = _rows(run, range(1, 51))
    db.insert_metrics(rows)
    db.insert_metrics(rows)  # a retried batch
    db.insert_metrics([(run, 1, "loss", 999.0, 0.0)])  # same key: first value stays
    stored = db.metric_rows([run])
    assert len(stored) == len(rows) == db.count_metrics([run])
    assert [r for r in stored if r[1] == 1 and r[2] == "loss"][0][3] == 1.0
    print(f"\nidempotent insert: {len(rows)} rows written twice, {len(stored)} found")


def test_metric_rows_order_names_after_step_and_max_steps(db):
    exp, a = _run(db)
    b = db.create_run(exp, "fkl", 0, {}, 10)
    db.insert_metrics(_rows(b, range(1, 4), names=("loss",)) + _rows(a, range(5, 0, -1)))
    rows = db.metric_rows([b, a])
    keys = [(r[0], r[2], r[1]) for r in rows]
    assert keys == sorted(keys)  # run, name, step
    assert db.max_steps([a, b, 777]) == {a: 5, b: 3}
    assert db.metric_names([a, b]) == ["kl", "loss"] and db.metric_names([b]) == ["loss"]

    newer = db.metric_rows([a, b], after_step={a: 3})
    assert {(r[0], r[1]) for r in newer if r[0] == a} == {(a, 4), (a, 5)}
    assert len([r for r in newer if r[0] == b]) == 3  # no entry for b: all its rows
    only_kl = db.metric_rows([a], names=["kl"], after_step={a: 4})
    assert only_kl == [(a, 5, "kl", 5.1, 1005.0)]
    assert db.metric_rows([a], names=[]) == [] and db.metric_rows([]) == []
    assert db.max_steps([]) == {}


def test_nan_and_inf_round_trip(db):
    _, run = _run(db)
    values = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "zero": 0.0, "tiny": 5e-324}
    db.insert_metrics([(run, 1, n, v, 1.0) for n, v in values.items()])
    got = {r[2]: r[3] for r in db.metric_rows([run])}
    assert math.isnan(got["nan"])
    assert got["inf"] == math.inf and got["-inf"] == -math.inf
    assert got["zero"] == 0.0 and got["tiny"] == 5e-324
    assert encode_value(math.nan) is None and math.isnan(decode_value(None))


def test_samples_and_events(db):
    _, run = _run(db)
    samples = [{"prompt": "p0", "text": "t0", "reference": "r0"}, {"prompt": "p1", "text": "t1"}]
    db.add_samples(run, 10, samples)
    db.add_samples(run, 10, samples)  # retried: ignored
    db.add_samples(run, 20, [{"prompt": "p0", "text": "later", "idx": 0}])
    got = db.samples(run)
    assert [(s["step"], s["idx"], s["text"]) for s in got] == [(10, 0, "t0"), (10, 1, "t1"), (20, 0, "later")]
    assert got[1]["reference"] is None and got[0]["reference"] == "r0"
    assert len(db.samples(run, step=20)) == 1
    db.add_event(run, "started", "on cpu", time_=1.0)
    db.add_event(run, "done", "finished 10 steps", time_=2.0)
    assert [(e["kind"], e["message"]) for e in db.events(run)] == [("started", "on cpu"), ("done", "finished 10 steps")]


def test_delete_run_and_experiment_cascade(db):
    exp, a = _run(db)
    b = db.create_run(exp, "fkl", 0, {}, 10)
    for rid in (a, b):
        db.insert_metrics(_rows(rid, range(1, 6)))
        db.add_samples(rid, 1, [{"prompt": "p", "text": "t"}])
        db.add_event(rid, "started", "")
    assert db.delete_run(a)
    assert db.get_run(a) is None and db.count_metrics([a]) == 0
    assert db.samples(a) == [] and db.events(a) == []
    assert db.count_metrics([b]) == 10 and db.delete_run(a) is False
    assert db.delete_experiment(exp)
    assert db.get_experiment(exp) is None and db.list_runs() == []
    assert db.count_metrics([b]) == 0 and db.samples(b) == [] and db.events(b) == []
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM metrics").scalar() == 0


def test_metrics_of_a_deleted_run_are_refused(db):
    from sqlalchemy.exc import IntegrityError

    _, run = _run(db)
    db.delete_run(run)
    with pytest.raises(IntegrityError):
        db.insert_metrics([(run, 1, "loss", 1.0, 1.0)])
    assert db.existing_run_ids([run]) == set()


def test_closed_database_refuses_calls(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'c.sqlite'}")
    database.close()
    with pytest.raises(RuntimeError, match="closed"):
        database.list_runs()


def test_in_memory_sqlite_works():
    with Database("sqlite://") as database:
        _, run = _run(database)
        database.insert_metrics(_rows(run, range(3)))
        assert database.max_steps([run]) == {run: 2}


def test_in_memory_sqlite_from_several_threads():
    import threading

    with Database("sqlite://") as database:
        _, run = _run(database)
        errors = []

        def work(offset: int) -> None:
            try:
                for s in range(50):
                    database.insert_metrics([(run, offset * 1000 + s, "loss", 1.0, 1.0)])
                    database.max_steps([run])
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and database.count_metrics([run]) == 200
