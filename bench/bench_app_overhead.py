"""Benchmark: does watching a run slow it down? Steps/s of one run, bare engine vs dashboard open.

Same experiment both ways (tiny models: the worst case, since a step takes ~0.1 s, so any UI cost
shows; with the default teacher a CPU step takes seconds and the UI is noise):
  bare : Runner.launch, nobody reading the database;
  app  : ui.build_demo launched in this process, headless chromium on the Live tab with the timer
         refreshing every 1.5 s (figures, runs table, samples) while the run trains.
Rates come from the run's own metric wall times (steps 5..end, skipping warm-up). The two modes are
alternated `--rounds` times because other load on a small machine drifts.

    .venv/bin/python bench/bench_app_overhead.py [--steps 200] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
_TMP = Path(tempfile.mkdtemp(prefix="minillm-bench-"))
os.environ.setdefault("MINILLM_DASH_STORAGE", str(_TMP / "storage"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from minillm_dash.config import ExperimentConfig, TrainSettings  # noqa: E402
from minillm_dash.db import Database  # noqa: E402
from minillm_dash.runner import Runner  # noqa: E402
from minillm_dash.variants import preset  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def experiment(steps: int, name: str) -> ExperimentConfig:
    return ExperimentConfig(name=name, variants=(preset("minillm"),), seeds=(0,), teacher="tiny", student="pruned:2",
                            train=TrainSettings(steps=steps, batch_size=2, max_new_tokens=16, eval_every=25,
                                                heldout_size=4, eval_max_new_tokens=16, max_prompt_tokens=64))


def steps_per_s(db: Database, experiment_id: int, skip: int = 5) -> float:
    (run,) = db.list_runs(experiment_id)
    rows = [(s, w) for _, s, _, _, w in db.metric_rows([run["id"]], names=["loss/total"]) if s >= skip]
    (s0, w0), (s1, w1) = rows[0], rows[-1]
    return (s1 - s0) / (w1 - w0)


def run_bare(db: Database, runner: Runner, steps: int, i: int) -> float:
    eid = runner.launch(experiment(steps, f"bare-{i}"))
    runner.wait()
    return steps_per_s(db, eid)


def run_with_page(db: Database, runner: Runner, page, steps: int, i: int) -> float:
    eid = runner.launch(experiment(steps, f"app-{i}"))
    page.reload()
    page.get_by_role("tab", name="Live").click()
    page.locator("#live-chart-0 .js-plotly-plot").wait_for(timeout=60_000)
    runner.wait()
    page.locator("#live-status >> text=paused").wait_for(timeout=30_000)  # the page followed to the end
    return steps_per_s(db, eid)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from playwright.sync_api import sync_playwright

    from minillm_dash import ui

    db = Database(f"sqlite:///{_TMP / 'bench.sqlite'}")
    runner = Runner(db, max_concurrent=1)
    demo = ui.build_demo(db, runner, max_upload_mb=1)
    demo.queue(default_concurrency_limit=4)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    bare, app = [], []
    try:
        run_bare(db, runner, 20, -1)  # warm-up: teacher cache, first-call costs
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.route("**/*", lambda r: r.continue_() if "127.0.0.1" in r.request.url else r.abort())
            page.goto(f"http://127.0.0.1:{port}/")
            for i in range(args.rounds):
                bare.append(run_bare(db, runner, args.steps, i))
                app.append(run_with_page(db, runner, page, args.steps, i))
                print(f"round {i}: bare {bare[-1]:.2f} steps/s, with the Live page open {app[-1]:.2f} steps/s")
            browser.close()
    finally:
        runner.shutdown()
        demo.close()
        db.close()
    b, a = statistics.median(bare), statistics.median(app)
    print(f"median over {args.rounds} rounds, {args.steps} steps, tiny models, 1 torch thread: bare {b:.2f} steps/s, "
          f"page open {a:.2f} steps/s ({(a / b - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
