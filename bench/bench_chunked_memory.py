"""Peak memory and time of one forward+backward of a full-vocabulary divergence: chunked vs naive.

    .venv/bin/python bench/bench_chunked_memory.py            # B·T=4096, V=49152, H=576, float32

Both variants start from the same final hidden states and output matrices (SmolLM2-135M sizes) and
compute masked_mean(divergence) then backward() into the student's hidden states and weight:
- naive:   logits = hidden @ W.T for both models, then `losses.token_divergence`;
- chunked: `chunked.chunked_token_divergence` (per-chunk logits under checkpointing).
Each variant runs in a fresh subprocess. On CPU the peak is ru_maxrss (high-water RSS) minus the
process's RSS right before the computation (torch imported, inputs allocated); on CUDA it is
torch.cuda.max_memory_allocated minus memory_allocated before the computation.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _current_rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_variant(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from minillm_dash.chunked import chunked_token_divergence
    from minillm_dash.losses import masked_mean, token_divergence

    device = torch.device(args.device)
    torch.manual_seed(0)
    n, h, ht, v = args.tokens, args.hidden, args.teacher_hidden, args.vocab
    s_h = torch.randn(1, n, h, device=device).requires_grad_(True)
    s_w = (torch.randn(v, h, device=device) * h**-0.5).requires_grad_(True)
    t_h = torch.randn(1, n, ht, device=device)
    t_w = torch.randn(v, ht, device=device) * ht**-0.5
    mask = torch.ones(1, n, device=device)

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _current_rss_bytes()

    t0 = time.perf_counter()
    if args.variant == "naive":
        s_logits = F.linear(s_h, s_w)
        with torch.no_grad():
            t_logits = F.linear(t_h, t_w)
        div = token_divergence(args.name, s_logits, t_logits)
    else:
        div = chunked_token_divergence(args.name, s_h, s_w, t_h, t_w, chunk_tokens=args.chunk)
    loss = masked_mean(div, mask)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0

    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {
        "variant": args.variant,
        "peak_bytes": int(peak),
        "seconds": seconds,
        "loss": float(loss),
        "grad_norm": float(s_w.grad.norm()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=4096, help="B·T")
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--hidden", type=int, default=576, help="student hidden size")
    ap.add_argument("--teacher-hidden", type=int, default=576)
    ap.add_argument("--name", default="rkl", help="divergence name")
    ap.add_argument("--chunk", type=int, default=256, help="chunk_tokens of the chunked path")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--variant", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.variant:
        print(json.dumps(run_variant(args)))
        return

    results = {}
    passthrough = [
        f"--tokens={args.tokens}", f"--vocab={args.vocab}", f"--hidden={args.hidden}",
        f"--teacher-hidden={args.teacher_hidden}", f"--name={args.name}", f"--chunk={args.chunk}",
        f"--device={args.device}",
    ]
    for variant in ("naive", "chunked"):
        out = subprocess.run(
            [sys.executable, __file__, f"--variant={variant}", *passthrough],
            capture_output=True, text=True, check=True,
        )
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])

    import torch

    print(
        f"divergence={args.name} B*T={args.tokens} V={args.vocab} H={args.hidden} "
        f"H_teacher={args.teacher_hidden} chunk_tokens={args.chunk} float32 device={args.device} "
        f"torch={torch.__version__} threads={torch.get_num_threads()}"
    )
    print(f"{'variant':<8} {'peak MiB':>10} {'time s':>8} {'loss':>12} {'|grad W|':>12}")
    for r in results.values():
        print(
            f"{r['variant']:<8} {r['peak_bytes'] / 2**20:>10.1f} {r['seconds']:>8.2f} "
            f"{r['loss']:>12.6f} {r['grad_norm']:>12.6f}"
        )
    ratio = results["chunked"]["peak_bytes"] / results["naive"]["peak_bytes"]
    print(f"peak ratio chunked/naive = {ratio:.3f} (target <= 0.25)")
    print(f"time ratio chunked/naive = {results['chunked']['seconds'] / results['naive']['seconds']:.2f}")


if __name__ == "__main__":
    main()
