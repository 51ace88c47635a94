"""The same storage round-trip on a real PostgreSQL server (throwaway cluster), when its binaries exist.

Skipped with the reason when no server binaries are installed or no unprivileged user can run them
(initdb refuses root).
"""

from __future__ import annotations

import glob
import math
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.test_db import dead_owner

from minillm_dash.db import Database
from minillm_dash.export import export_history
from minillm_dash.metric_writer import MetricWriter

PASSWORD = "pg-s3cret-Pw"


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user_prefix() -> tuple[list[str], int | None, int | None]:
    """Command prefix to run the server binaries unprivileged (root -> the 'postgres' user)."""
    if os.geteuid() != 0:
        return [], None, None
    runuser = shutil.which("runuser")
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user to run initdb as")
    if runuser is None:
        pytest.skip("running as root and runuser is not available to drop privileges for initdb")
    return [runuser, "-u", "postgres", "--"], entry.pw_uid, entry.pw_gid


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.skip(f"{what} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-400:]}")


@pytest.fixture(scope="module")
def pg_url():
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin")
    prefix, uid, gid = _as_user_prefix()
    # Not under pytest's tmp_path: its 0700 parent would stop the 'postgres' user.
    root = Path(tempfile.mkdtemp(prefix="minillm-pg-"))
    data, pwfile, logfile = root / "data", root / "pw", root / "server.log"
    pwfile.write_text(PASSWORD)
    if uid is not None:
        os.chown(root, uid, gid)
        os.chown(pwfile, uid, gid)
    port = _free_port()
    started = False
    try:
        _run(prefix + [initdb, "-D", str(data), "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={pwfile}",
                       "-E", "UTF8", "--no-sync", "--no-instructions"], "initdb")
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        _run(prefix + [pg_ctl, "-D", str(data), "-l", str(logfile), "-o", opts, "-w", "-t", "30", "start"],
             "pg_ctl start")
        started = True
        yield f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(prefix + [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def db(pg_url):
    database = Database(pg_url)
    yield database
    # Leave the cluster clean for the next test.
    for exp in database.list_experiments():
        database.delete_experiment(exp["id"])
    for ds in database.list_datasets():
        database.delete_dataset(ds["id"])
    database.close()


def test_password_never_shown(db):
    assert db.dialect == "postgresql"
    assert PASSWORD not in db.safe_url and PASSWORD not in repr(db) and "***" in db.safe_url


def test_crud_round_trip(db):
    rows = [{"prompt": "hi", "messages": None, "reference": "yo", "source_line": 1}]
    ds = db.add_dataset(name="d.jsonl", content_hash="abc", detected_format="jsonl", fields=["prompt"], rows=rows)
    assert db.add_dataset(name="again", content_hash="abc", detected_format="x", fields=[], rows=[]) == ds
    assert db.get_dataset(ds)["rows"] == rows and db.get_dataset(ds)["has_references"] is True

    exp = db.create_experiment("pg", {"steps": 3})
    run = db.create_run(exp, "minillm", 0, {"lr": 1e-4}, 3)
    queued = db.create_run(exp, "fkl", 1, {}, 3)
    assert db.update_run(run, status="running", device="cpu")
    assert db.get_run(run)["status"] == "running" and db.list_experiments()[0]["n_runs"] == 2
    assert db.mark_interrupted() == 0  # owned by this live process
    for rid in (run, queued):
        db.update_run(rid, owner=dead_owner())
    assert db.mark_interrupted() == 2 and db.get_run(queued)["status"] == "interrupted"
    db.add_samples(run, 1, [{"prompt": "p", "text": "t"}])
    db.add_samples(run, 1, [{"prompt": "p", "text": "t"}])
    db.add_event(run, "note", "hello")
    assert len(db.samples(run)) == 1 and db.events(run)[0]["message"] == "hello"
    assert db.delete_run(run) and db.samples(run) == [] and db.events(run) == []


def test_metrics_round_trip(db, tmp_path):
    exp = db.create_experiment("pg", {})
    a, b = db.create_run(exp, "minillm", 0, {}, 10), db.create_run(exp, "fkl", 0, {}, 10)
    rows = [(r, s, n, s + i / 10, 1.0 + s) for r in (a, b) for s in range(1, 11) for i, n in enumerate(("kl", "loss"))]
    db.insert_metrics(rows)
    db.insert_metrics(rows)  # idempotent
    db.insert_metrics([(a, 11, "loss", math.nan, 2.0), (a, 11, "kl", -math.inf, 2.0)])
    assert db.count_metrics([a, b]) == len(rows) + 2
    assert db.max_steps([a, b]) == {a: 11, b: 10}
    assert db.metric_names([a]) == ["kl", "loss"]
    got = db.metric_rows([a, b], names=["loss"], after_step={a: 9})
    assert [(r[0], r[1]) for r in got if r[0] == a] == [(a, 10), (a, 11)] and math.isnan(got[1][3])
    assert len([r for r in got if r[0] == b]) == 10
    assert db.metric_rows([a], names=["kl"], after_step={a: 10})[0][3] == -math.inf
    out = export_history(db, [a, b], "csv", tmp_path / "pg.csv")
    assert len(out.read_text().splitlines()) == 1 + db.count_metrics([a, b])


def test_writers_and_readers_on_postgres(db):
    exp = db.create_experiment("pg-load", {})
    runs = [db.create_run(exp, "v", i, {}, 500) for i in range(4)]
    writers = [MetricWriter(db, flush_interval=0.1) for _ in runs]
    errors: list[str] = []
    stop = threading.Event()

    def write(run_id: int, writer: MetricWriter) -> None:
        try:
            for step in range(1, 501):
                writer.log(run_id, step, {f"m{i}": float(step) for i in range(10)})
                if step % 100 == 0:
                    db.update_run(run_id, step=step)
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    def read() -> None:
        last: dict[int, int] = {}
        try:
            while not stop.is_set():
                db.max_steps(runs)
                for r, s, *_ in db.metric_rows(runs, after_step=last):
                    last[r] = max(last.get(r, -1), s)
                time.sleep(0.05)
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=write, args=(r, w)) for r, w in zip(runs, writers)]
    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join(60)
    for w in writers:
        w.close()
    stop.set()
    for t in readers:
        t.join(30)
    found = db.count_metrics(runs)
    slowest = max(w.slowest_batch_s for w in writers)
    print(f"\npostgres: {4 * 500 * 10} rows written, {found} found in {time.perf_counter() - t0:.1f} s; "
          f"slowest batch {slowest * 1e3:.0f} ms")
    assert errors == [] and all(w.last_error is None and w.dropped_rows == 0 for w in writers)
    assert found == 20_000
