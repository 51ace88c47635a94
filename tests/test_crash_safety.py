"""Crash safety: an experiment process killed with SIGKILL mid-run leaves a sound database, runs
marked `interrupted` at the next start, history intact up to the last flush, and a working re-launch."""

import os
import signal
import subprocess
import sys
import time

from sqlalchemy import text

from minillm_dash.db import Database

ARGS = ["run", "--teacher", "tiny", "--student", "pruned:2", "--variants", "rkl,fkl", "--batch-size", "2",
        "--max-new-tokens", "4", "--max-prompt-tokens", "32", "--eval-every", "1000", "--heldout-size", "2",
        "--quiet"]


def _launch(url, steps):
    return subprocess.Popen([sys.executable, "-m", "minillm_dash", "--db", url, *ARGS, "--steps", str(steps)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_sigkill_mid_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'crash.sqlite'}"
    proc = _launch(url, steps=100000)
    db = Database(url)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            runs = db.list_runs()
            if len(runs) == 2 and min(db.max_steps([r["id"] for r in runs]).get(r["id"], 0) for r in runs) >= 5:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        else:
            raise AssertionError("the experiment never reached step 5")
        time.sleep(1.0)
        killed_at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()

    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    run_ids = [r["id"] for r in db.list_runs()]
    assert {r["status"] for r in db.list_runs()} == {"running"}  # what a dead process leaves behind
    assert db.mark_interrupted() == 2  # the next start's recovery
    assert {r["status"] for r in db.list_runs()} == {"interrupted"}

    rows = db.metric_rows(run_ids)
    for run_id in run_ids:
        steps = sorted({r[1] for r in rows if r[0] == run_id})
        assert steps == list(range(1, steps[-1] + 1)), f"run {run_id} has gaps in its history: {steps}"
        per_step = {s: sum(1 for r in rows if r[0] == run_id and r[1] == s) for s in steps}
        assert len(set(per_step.values())) == 1, f"a step was written partially: {per_step}"
    lost = killed_at - max(r[4] for r in rows)
    print(f"rows kept {len(rows)}, seconds lost after SIGKILL {lost:.2f}")
    assert lost < 1.5, f"{lost:.2f} s of history lost (flush interval 0.5 s)"

    again = _launch(url, steps=3)
    out, err = again.communicate(timeout=180)
    assert again.returncode == 0, err
    assert sorted(r["status"] for r in db.list_runs()) == ["done", "done", "interrupted", "interrupted"]
