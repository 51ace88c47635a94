"""Teacher-mixed sampling: KV caches (rollout.sample_responses) vs recomputing every token.

The baseline runs a full forward of both models over the whole sequence for every new token (the
obvious implementation without caches; it still asks only for the last position's logits, so the
difference is the caching alone). Both use the same seeded generator and draw the same tokens; EOS is
disabled so both produce exactly --new-tokens tokens. Also times plain student sampling with the
teacher scored once afterwards vs a teacher cache stepped alongside (the choice rollout makes).

    .venv/bin/python bench/bench_rollout_cache.py            # default teacher + 6-layer pruned student
    .venv/bin/python bench/bench_rollout_cache.py --tiny     # seconds, for a quick check
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minillm_dash import modeling, rollout, tiny  # noqa: E402
from minillm_dash.modeling import ModelSource  # noqa: E402

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain in one paragraph why the sky is blue.",
    "Give three tips for learning a new language.",
    "What is 12 times 7?",
    "Name a famous painter and one of their works.",
    "Describe a cat to someone who has never seen one.",
    "Why do we have seasons?",
]
NO_EOS = -1  # never sampled: every row runs the full length in both implementations


def load_models(use_tiny: bool, keep_layers: int) -> tuple[torch.nn.Module, torch.nn.Module, object]:
    """Default teacher + pruned student, or the tiny pair; both in eval mode on CPU/CUDA."""
    device = modeling.resolve_device(None)
    dtype = modeling.default_dtype(device)
    if use_tiny:
        teacher, student, tok = tiny.tiny_pair()
        return teacher.to(device, dtype), student.to(device, dtype), tok
    teacher, tok = modeling.load_teacher(ModelSource("default"), device, dtype, progress=print)
    student, _ = modeling.load_student(ModelSource("pruned", keep_layers=keep_layers), teacher, tok, device, dtype)
    return teacher, student, tok


def encode(tok: object, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Chat-formatted, left-padded prompts."""
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in (PROMPTS * batch)[:batch]]
    seqs = [tok(t, add_special_tokens=False).input_ids for t in texts]
    width = max(map(len, seqs))
    ids = torch.full((batch, width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s)
        mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def mixed_without_cache(student, teacher, ids, mask, new_tokens: int, alpha: float, gen: torch.Generator):
    """Baseline: full forward of both models on the whole sequence for every new token."""
    seq, seq_mask, out = ids, mask, []
    for _ in range(new_tokens):
        pos = rollout.position_ids_from_mask(seq_mask)
        kw = dict(input_ids=seq, attention_mask=seq_mask, position_ids=pos, use_cache=False, logits_to_keep=1)
        lq = torch.log_softmax(student(**kw).logits[:, -1].float(), -1)
        lp = torch.log_softmax(teacher(**kw).logits[:, -1].float(), -1)
        probs = alpha * lp.exp() + (1 - alpha) * lq.exp()
        token = torch.multinomial(probs.to(gen.device), 1, generator=gen).to(seq.device)
        out.append(token[:, 0])
        seq = torch.cat([seq, token], 1)
        seq_mask = torch.cat([seq_mask, torch.ones_like(token)], 1)
    return torch.stack(out, 1)


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny random models instead of the default teacher")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=0.2)
    ap.add_argument("--keep-layers", type=int, default=6)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--skip-student", action="store_true", help="skip the student-sampling comparison")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    teacher, student, tok = load_models(args.tiny, args.keep_layers)
    student.eval()
    device = rollout.model_device(student)
    ids, mask = encode(tok, args.batch, device)
    print(f"device {device}, dtype {next(student.parameters()).dtype}, torch threads {torch.get_num_threads()}, "
          f"batch {args.batch}, prompt width {ids.shape[1]}, new tokens {args.new_tokens}, "
          f"teacher {teacher.config.num_hidden_layers} layers, student {student.config.num_hidden_layers} layers")

    def sample(source: str, scoring: str = "after"):
        return rollout.sample_responses(
            student, teacher, ids, mask, source=source, max_new_tokens=args.new_tokens, mix_alpha=args.alpha,
            eos_token_id=NO_EOS, pad_token_id=tok.pad_token_id, generator=torch.Generator().manual_seed(0),
            teacher_scoring=scoring)

    sample("mixed")  # warm-up (allocator, kernels)
    cached, t_cached = timed(lambda: sample("mixed"))
    naive, t_naive = timed(lambda: mixed_without_cache(student, teacher, ids, mask, args.new_tokens, args.alpha,
                                                       torch.Generator().manual_seed(0)))
    same = torch.equal(cached.response_ids, naive)
    print(f"mixed sampling, KV caches:        {t_cached:8.2f} s")
    print(f"mixed sampling, recompute (no cache): {t_naive:8.2f} s")
    print(f"speed-up: {t_naive / t_cached:.1f}x   (identical tokens: {same})")

    if not args.skip_student:
        after, t_after = timed(lambda: sample("student", "after"))
        stepped, t_stepped = timed(lambda: sample("student", "stepped"))
        print(f"student sampling, teacher scored after (1 forward): {t_after:8.2f} s")
        print(f"student sampling, teacher cache stepped alongside:  {t_stepped:8.2f} s")
        print(f"identical tokens: {torch.equal(after.response_ids, stepped.response_ids)}")


if __name__ == "__main__":
    main()
