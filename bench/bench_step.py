"""Time split of one training step per variant with the default models (CPU unless CUDA is there).

Runs every chosen variant for a few steps side by side in one process (same prompts, same seed),
then prints the median time per phase (sampling, teacher forward, student forward+backward,
optimizer, yardstick pass) and each variant's step time relative to `minillm`.

    .venv/bin/python bench/bench_step.py --steps 3 --variants minillm,minillm_wsingle,rkl,fkl,seqkd,sft
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minillm_dash import data
from minillm_dash.config import RunConfig, TrainSettings
from minillm_dash.modeling import ModelSource, default_dtype, load_student, load_teacher, resolve_device
from minillm_dash.trainer import RunTrainer
from minillm_dash.variants import preset

PHASES = ("sampling", "teacher", "student", "optimizer", "yardstick", "step")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="minillm,minillm_wsingle,rkl,fkl,seqkd,sft")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--teacher", default="default")
    ap.add_argument("--student", default="pruned:6")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(None)
    teacher, tok = load_teacher(ModelSource.parse(args.teacher), device, default_dtype(device))
    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                             eval_every=10_000, heldout_size=0)
    rows = {}
    for name in args.variants.split(","):
        student, _ = load_student(ModelSource.parse(args.student), teacher, tok, device, torch.float32)
        cfg = RunConfig(teacher=args.teacher, student=args.student, variant=preset(name), seed=0, train=settings)
        reports = []
        start = time.perf_counter()
        RunTrainer(cfg, teacher, student, tok, data.builtin_dataset(), device).run(reports.append)
        wall = time.perf_counter() - start
        rows[name] = {p: statistics.median(r.metrics.get(f"time/{p}", 0.0) for r in reports) for p in PHASES}
        rows[name]["tokens"] = statistics.median(r.metrics["train/response_len"] for r in reports)
        print(f"{name}: {args.steps} steps in {wall:.1f} s", flush=True)
        del student
    base = rows.get("minillm", next(iter(rows.values())))["step"]
    print(f"\ndevice {device}, torch threads {torch.get_num_threads()}, batch {args.batch_size}, "
          f"max new tokens {args.max_new_tokens}; median seconds per step")
    print("| variant | " + " | ".join(PHASES) + " | mean response tokens | step vs minillm |")
    print("|---" * (len(PHASES) + 3) + "|")
    for name, r in rows.items():
        cells = " | ".join(f"{r[p]:.2f}" for p in PHASES)
        print(f"| {name} | {cells} | {r['tokens']:.1f} | {r['step'] / base:.2f} |")


if __name__ == "__main__":
    main()
