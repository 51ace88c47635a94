"""Benchmark: one Live-tab timer tick end to end, database included (SQLite, WAL).

8 runs x 10,000 steps x 29 metrics (2.3M rows, every metric the trainer logs) are stored in a
temporary SQLite database; then `LiveTab.refresh` (the timer's function: max step per run, plan,
incremental queries, cache merge, 3 charts + runs table + summary + samples) is timed:
  first load  - a page opens on the finished experiment (fetches the ~6 metrics it shows),
  tick        - 8 new steps per run were inserted since the last tick,
  idle tick   - nothing new (what a page costs while runs are between flushes).

    .venv/bin/python bench/bench_live_tick.py [--runs 8] [--steps 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from minillm_dash.dashboard_queries import KNOWN_METRICS  # noqa: E402
from minillm_dash.db import Database  # noqa: E402

VARIANTS = ("minillm", "minillm_wsingle", "rkl", "fkl")


def rows_for(run_ids, start, stop, rng):
    steps = np.arange(start, stop)
    out = []
    for rid in run_ids:
        for j, name in enumerate(KNOWN_METRICS):
            vals = (1 + j % 5) * np.exp(-steps / 4000) + rng.normal(0, 0.05, steps.size)
            out.extend(zip([rid] * steps.size, steps.tolist(), [name] * steps.size, vals.tolist(),
                           (1e6 + steps * 0.4).tolist()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    import gradio as gr

    from minillm_dash.ui_common import UIContext
    from minillm_dash.ui_live import LiveTab

    rng = np.random.default_rng(0)
    db = Database(f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite")
    exp = db.create_experiment("bench", {})
    ids = [db.create_run(exp, VARIANTS[i % 4], i // 4, {}, args.steps * 2) for i in range(args.runs)]
    for rid in ids:
        db.update_run(rid, status="running", started_at=time.time())
    t = time.perf_counter()
    for rid in ids:
        db.insert_metrics(rows_for([rid], 1, args.steps + 1, rng))
    print(f"stored {db.count_metrics(ids):,} rows in {time.perf_counter() - t:.0f} s")

    class _Runner:
        max_concurrent = 2

    with gr.Blocks():
        live = LiveTab(UIContext(db, _Runner(), 1 << 20))
    inputs = [["loss/total"], ["train/klr", "eval/klr"], [], "step", 0.6, False, True, 0, "eval/klr"]
    t = time.perf_counter()
    out = live.refresh(None, exp, *inputs)
    print(f"first load (page opens): {(time.perf_counter() - t) * 1000:.0f} ms")
    state = out[0]
    step = args.steps + 1
    ticks, idle = [], []
    for _ in range(args.repeat):
        db.insert_metrics(rows_for(ids, step, step + 8, rng))
        step += 8
        t = time.perf_counter()
        out = live.refresh(state, exp, *inputs)
        ticks.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        live.refresh(state, exp, *inputs)
        idle.append((time.perf_counter() - t) * 1000)
    print(f"tick with 8 new steps per run: median {statistics.median(ticks):.0f} ms (best {min(ticks):.0f}); "
          f"idle tick: median {statistics.median(idle):.1f} ms")
    db.close()


if __name__ == "__main__":
    main()
