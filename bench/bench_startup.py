"""Second start to first step: a fresh Python process loads the cached default teacher, prunes a
6-layer student and samples 4 prompts x 8 tokens (teacher-mixed). Target: at most 10 s.

Each measurement runs in a subprocess so that imports and loading are paid exactly as on a real
start. With --fresh the model store is a new temp folder: the first start then includes converting
the GGUF (the one-time cost), and the second start shows the cached path.

    .venv/bin/python bench/bench_startup.py            # cached store (converts first if missing)
    .venv/bin/python bench/bench_startup.py --fresh    # first (uncached) start, then the second start
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(threads: int | None) -> None:
    """The measured start: imports, teacher, pruned student, one sampling step; prints JSON timings."""
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    import torch

    if threads:
        torch.set_num_threads(threads)
    sys.path.insert(0, str(ROOT))
    from minillm_dash import modeling, rollout
    from minillm_dash.modeling import ModelSource

    marks["imports"] = time.perf_counter() - t0
    device = modeling.resolve_device(None)
    dtype = modeling.default_dtype(device)
    t = time.perf_counter()
    modeling.convert_default_teacher()
    marks["convert_or_find"] = time.perf_counter() - t
    t = time.perf_counter()
    teacher, tok = modeling.load_teacher(ModelSource("default"), device, dtype)
    student, _ = modeling.load_student(ModelSource("pruned", keep_layers=6), teacher, tok, device, dtype)
    marks["load_models"] = time.perf_counter() - t
    t = time.perf_counter()
    texts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
             for q in ("What is 2+2?", "Name a colour.", "Say hello.", "What is the capital of France?")]
    enc = tok(texts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt")
    batch = rollout.sample_responses(student, teacher, enc.input_ids, enc.attention_mask, source="mixed",
                                     max_new_tokens=8, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                     generator=torch.Generator().manual_seed(0))
    marks["first_sampling_step"] = time.perf_counter() - t
    marks["tokens"] = float(batch.response_mask.sum())
    marks["in_process_total"] = time.perf_counter() - t0
    marks["done_at"] = time.time()  # wall clock, so the parent can exclude interpreter teardown
    print("RESULT " + json.dumps(marks), flush=True)


def measure(env: dict[str, str], threads: int | None) -> dict[str, float]:
    """Run one start in a fresh interpreter; wall time from launch (interpreter start-up included) to
    the end of the first sampling step."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child"] + (["--threads", str(threads)] if threads else [])
    launched = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    result["wall"] = result["done_at"] - launched  # launch -> first step done (teardown excluded)
    return result


def report(label: str, r: dict[str, float]) -> None:
    print(f"{label}: {r['wall']:.1f} s wall  (imports {r['imports']:.1f}, convert/find {r['convert_or_find']:.1f}, "
          f"load teacher+student {r['load_models']:.1f}, first sampling step {r['first_sampling_step']:.1f} s "
          f"for {int(r['tokens'])} tokens)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--fresh", action="store_true", help="start from an empty model store (measures conversion)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads in the child")
    ap.add_argument("--repeats", type=int, default=1, help="cached starts to measure")
    args = ap.parse_args()
    if args.child:
        child(args.threads)
        return
    env = dict(os.environ)
    tmp = None
    if args.fresh:
        tmp = tempfile.TemporaryDirectory(prefix="minillm-dash-bench-models-")
        env["MINILLM_DASH_MODELS"] = tmp.name
        report("first start (converts the GGUF)", measure(env, args.threads))
    else:
        sys.path.insert(0, str(ROOT))
        from minillm_dash import modeling

        modeling.convert_default_teacher(progress=print)  # make sure the store is warm
    walls = []
    for i in range(args.repeats):
        r = measure(env, args.threads)
        walls.append(r["wall"])
        report(f"second start #{i + 1}", r)
    print(f"second start to first step: best {min(walls):.1f} s (target <= 10 s)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
