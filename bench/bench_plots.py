"""Benchmark: one Live-tab refresh for 8 runs x 10,000 steps x 5 metrics (target <= 150 ms).

Goes through the same path as the dashboard's timer: rows merged into the page's MetricCache ->
run_series -> smoothing + stable min/max downsampling + seed bands -> go.Figure -> gr.Plot's
postprocess (fig.to_json). Measures (a) a full rebuild of all 5 charts, (b) a typical tick: 8 new
steps per run merged, then the 5 charts rebuilt, (c) the JSON payload size.

    .venv/bin/python bench/bench_plots.py [--runs 8] [--steps 10000] [--metrics 5] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minillm_dash.dashboard_queries import MetricCache, build_live_figure  # noqa: E402

METRICS = ("train/klr", "train/klf", "loss/total", "train/grad_norm", "train/entropy")
VARIANTS = ("minillm", "minillm_wsingle", "rkl", "fkl")


def synthetic_rows(run_ids, metrics, start, stop, rng):
    """(run_id, step, name, value, wall_time) rows like the trainer logs: decaying, noisy, a few spikes."""
    rows = []
    steps = np.arange(start, stop)
    for rid in run_ids:
        for j, name in enumerate(metrics):
            vals = (2.0 + j) * np.exp(-steps / (3000 + 500 * rid)) + rng.normal(0, 0.05, steps.size) + 0.1
            vals[rng.random(steps.size) < 0.001] *= 5  # spikes downsampling must keep
            walls = 1_000_000.0 + rid * 10 + steps * 0.4
            rows.extend(zip([rid] * steps.size, steps.tolist(), [name] * steps.size, vals.tolist(), walls.tolist()))
    return rows


def refresh(cache, runs, metrics, *, smoothing, show_seeds, x_axis="step") -> int:
    """Build and serialise every chart; returns the payload size in bytes."""
    size = 0
    for m in metrics:
        fig = build_live_figure(cache, runs, m, x_axis=x_axis, smoothing=smoothing, log_y=False,
                                show_seeds=show_seeds)
        size += len(fig.to_json())
    return size


def timed(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--metrics", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    metrics = METRICS[: args.metrics]
    runs = [{"id": i + 1, "variant": VARIANTS[i % len(VARIANTS)], "seed": i // len(VARIANTS)}
            for i in range(args.runs)]
    ids = [r["id"] for r in runs]
    cache = MetricCache()
    t = time.perf_counter()
    cache.add_rows(synthetic_rows(ids, metrics, 1, args.steps + 1, rng))
    load_ms = (time.perf_counter() - t) * 1000
    print(f"{args.runs} runs x {args.steps} steps x {len(metrics)} metrics "
          f"({args.runs * args.steps * len(metrics):,} rows); first load into the cache {load_ms:.0f} ms")
    refresh(cache, runs, metrics, smoothing=0.6, show_seeds=True)  # warm-up (imports, caches)
    for label, kw in [("smoothing 0.6, seed bands + faint seeds", dict(smoothing=0.6, show_seeds=True)),
                      ("no smoothing, seed bands", dict(smoothing=0.0, show_seeds=False)),
                      ("smoothing 0.6, x = wall time", dict(smoothing=0.6, show_seeds=False, x_axis="wall_time"))]:
        med, best, size = timed(lambda: refresh(cache, runs, metrics, **kw), args.repeat)
        print(f"full refresh, {label}: median {med:.1f} ms (best {best:.1f}) for {len(metrics)} charts, "
              f"payload {size / 1024:.0f} KiB")
    step = [args.steps + 1]

    def tick():
        new = synthetic_rows(ids, metrics, step[0], step[0] + 8, rng)
        step[0] += 8
        cache.add_rows(new)
        return refresh(cache, runs, metrics, smoothing=0.6, show_seeds=True)

    med, best, _ = timed(tick, args.repeat)
    print(f"timer tick (8 new steps per run merged + {len(metrics)} charts rebuilt): median {med:.1f} ms "
          f"(best {best:.1f}); target <= 150 ms")


if __name__ == "__main__":
    main()
