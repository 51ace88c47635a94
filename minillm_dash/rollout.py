"""Where the scored sequences come from: reference, teacher, student and teacher-mixed sampling.

Sampling is a token-by-token loop over KV caches (recomputing the whole sequence every token is
O(T^2): 10x slower at 128 tokens, see docs/benchmarks.md). Mixed sampling advances the
student's and the teacher's caches together; plain student sampling scores the sampled tokens under
the teacher with a single forward afterwards (4x faster than stepping a second cache, measured too).
Prompts are left-padded: attention masks and position ids from the mask's cumsum make a padded row
give the same log-probs as the same prompt alone. Sampling is temperature 1 with no top-k/top-p,
because filtering would break the mixture and the importance weights.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from minillm_dash.losses import importance_weights

SOURCES = ("reference", "teacher", "student", "mixed")
SAMPLED_SOURCES = ("teacher", "student", "mixed")


@dataclass
class ScoredBatch:
    """The sequences a variant's loss is computed on (prompt + response, masks, rollout scores)."""

    input_ids: Tensor  # [B, P+T] left-padded prompt + response (pad after EOS)
    attention_mask: Tensor  # [B, P+T]
    prompt_len: int  # P
    response_ids: Tensor  # [B, T]
    response_mask: Tensor  # [B, T] float, 1 = real token (incl. the EOS that ended it)
    old_logprobs: Tensor | None  # [B, T] log q_old(y_t) (student / mixed sampling)
    teacher_logprobs: Tensor | None  # [B, T] log p(y_t) (teacher / student / mixed sampling)
    weights: Tensor | None  # [B, T] w_t (mixed), ones for student sampling
    source: str
    timings: dict[str, float] = field(default_factory=dict)  # seconds: "sampling" (+ details)


# --------------------------------------------------------------------------- helpers


def position_ids_from_mask(mask: Tensor) -> Tensor:
    """Positions counting only real tokens, so left padding does not shift a row's positions."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _forward_params(model: torch.nn.Module) -> frozenset[str]:
    return frozenset(inspect.signature(model.forward).parameters)


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Most HF causal LMs can skip the vocabulary projection for positions we do not need."""
    return "logits_to_keep" in _forward_params(model)


def _cache_kwarg(model: torch.nn.Module) -> str:
    """transformers >= 5.2x names the KV cache argument `cache`; older versions `past_key_values`."""
    return "cache" if "cache" in _forward_params(model) else "past_key_values"


def _cache_of(output: object) -> object:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


class _CachedLM:
    """One model's KV cache over a growing batch of sequences; yields float32 next-token log-probs."""

    def __init__(self, model: torch.nn.Module, prompt_ids: Tensor, prompt_mask: Tensor, out_device: torch.device):
        self.model = model
        self.device = model_device(model)
        self.out_device = out_device
        self.mask = prompt_mask.to(self.device).long()
        self.next_pos = self.mask.sum(-1)  # next real position of every row
        extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
        out = model(
            input_ids=prompt_ids.to(self.device),
            attention_mask=self.mask,
            position_ids=position_ids_from_mask(self.mask),
            use_cache=True,
            **extra,
        )
        self.cache_kw = _cache_kwarg(model)
        self.cache = _cache_of(out)
        self.logprobs = self._norm(out.logits[:, -1])

    def _norm(self, logits: Tensor) -> Tensor:
        return torch.log_softmax(logits.float(), dim=-1).to(self.out_device)

    def step(self, tokens: Tensor) -> Tensor:
        """Feed one token per row; returns (and keeps) the next-token log-probs [B, V]."""
        tokens = tokens.to(self.device)
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=self.mask,
            position_ids=self.next_pos[:, None],
            use_cache=True,
            **{self.cache_kw: self.cache},
        )
        self.next_pos = self.next_pos + 1
        self.cache = _cache_of(out)
        self.logprobs = self._norm(out.logits[:, -1])
        return self.logprobs


class _EvalMode:
    """Eval mode (no dropout) for the duration of a rollout; restores each model's previous mode."""

    def __init__(self, *models: torch.nn.Module | None):
        self.models = [m for m in models if m is not None]
        self.modes: list[bool] = []

    def __enter__(self) -> "_EvalMode":
        self.modes = [m.training for m in self.models]
        for m in self.models:
            m.eval()
        return self

    def __exit__(self, *exc: object) -> None:
        for m, mode in zip(self.models, self.modes):
            m.train(mode)


def _draw(probs: Tensor, generator: torch.Generator) -> Tensor:
    """One multinomial draw per row with the caller's generator (on its device, for reproducibility)."""
    gen_device = generator.device
    drawn = torch.multinomial(probs.to(gen_device), 1, generator=generator)
    return drawn[:, 0].to(probs.device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- sampling


@torch.no_grad()
def sample_responses(
    student: torch.nn.Module | None,
    teacher: torch.nn.Module | None,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    *,
    source: str,
    max_new_tokens: int,
    mix_alpha: float = 0.2,
    eos_token_id: int,
    pad_token_id: int,
    generator: torch.Generator,
    teacher_scoring: str = "after",
) -> ScoredBatch:
    """Sample responses from the student, the teacher, or α·p + (1−α)·q_old, with both KV caches.

    `teacher_scoring` (student source only): "after" scores the sampled tokens under the teacher with
    one forward at the end (default, faster); "stepped" advances a teacher cache alongside.
    """
    if source not in SAMPLED_SOURCES:
        raise ValueError(f"source must be one of {SAMPLED_SOURCES} for sampling, got {source!r}")
    if teacher_scoring not in ("after", "stepped"):
        raise ValueError(f"teacher_scoring must be 'after' or 'stepped', got {teacher_scoring!r}")
    if source in ("student", "mixed") and student is None:
        raise ValueError(f"{source} sampling needs a student")
    if source in ("teacher", "mixed") and teacher is None:
        raise ValueError(f"{source} sampling needs a teacher")
    if source == "mixed" and not 0.0 <= mix_alpha < 1.0:
        raise ValueError(f"mix_alpha must be in [0, 1), got {mix_alpha}")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")

    main = student if source in ("student", "mixed") else teacher
    device = model_device(main)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device).long()
    step_student = source in ("student", "mixed")
    step_teacher = source in ("teacher", "mixed") or (teacher is not None and teacher_scoring == "stepped")

    _sync(device)
    start = time.perf_counter()
    with _EvalMode(student, teacher):
        loop = _sampling_loop(
            student if step_student else None,
            teacher if step_teacher else None,
            prompt_ids,
            prompt_mask,
            source=source,
            max_new_tokens=max_new_tokens,
            alpha=mix_alpha,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            generator=generator,
        )
        response_ids, response_mask, student_lp, teacher_lp = loop
        _sync(device)
        loop_seconds = time.perf_counter() - start
        timings = {"sampling_loop": loop_seconds}
        if source == "student" and teacher is not None and not step_teacher:
            t0 = time.perf_counter()
            teacher_lp = _score(teacher, prompt_ids, prompt_mask, response_ids, response_mask)
            _sync(device)
            timings["sampling_teacher_score"] = time.perf_counter() - t0

    mask_f = response_mask.float()
    weights: Tensor | None = None
    if source == "mixed":
        weights = importance_weights(student_lp, teacher_lp, mix_alpha) * mask_f + (1.0 - mask_f)
    elif source == "student":
        weights = torch.ones_like(mask_f)
    timings["sampling"] = time.perf_counter() - start
    return ScoredBatch(
        input_ids=torch.cat([prompt_ids, response_ids], dim=1),
        attention_mask=torch.cat([prompt_mask, response_mask.long()], dim=1),
        prompt_len=prompt_ids.shape[1],
        response_ids=response_ids,
        response_mask=mask_f,
        old_logprobs=student_lp if step_student else None,
        teacher_logprobs=teacher_lp,
        weights=weights,
        source=source,
        timings=timings,
    )


def _sampling_loop(
    student: torch.nn.Module | None,
    teacher: torch.nn.Module | None,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    *,
    source: str,
    max_new_tokens: int,
    alpha: float,
    eos_token_id: int,
    pad_token_id: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """The cached token loop; returns ids, mask and per-token log q / log p (0 where masked)."""
    device = prompt_ids.device
    s_lm = _CachedLM(student, prompt_ids, prompt_mask, device) if student is not None else None
    t_lm = _CachedLM(teacher, prompt_ids, prompt_mask, device) if teacher is not None else None
    batch = prompt_ids.shape[0]
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    ids, masks, s_lps, t_lps = [], [], [], []
    for step in range(max_new_tokens):
        lq = s_lm.logprobs if s_lm is not None else None
        lp = t_lm.logprobs if t_lm is not None else None
        probs = _sampling_probs(source, lq, lp, alpha)
        token = _draw(probs, generator)
        alive = ~finished
        token = torch.where(alive, token, torch.full_like(token, pad_token_id))
        ids.append(token)
        masks.append(alive)
        if lq is not None:
            s_lps.append(torch.where(alive, lq.gather(1, token[:, None])[:, 0], 0.0))
        if lp is not None:
            t_lps.append(torch.where(alive, lp.gather(1, token[:, None])[:, 0], 0.0))
        finished = finished | (alive & (token == eos_token_id))
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        if s_lm is not None:
            s_lm.step(token)
        if t_lm is not None:
            t_lm.step(token)
    response_ids = torch.stack(ids, dim=1)
    response_mask = torch.stack(masks, dim=1)
    student_lp = torch.stack(s_lps, dim=1) if s_lps else None
    teacher_lp = torch.stack(t_lps, dim=1) if t_lps else None
    return response_ids, response_mask, student_lp, teacher_lp


def _sampling_probs(source: str, lq: Tensor | None, lp: Tensor | None, alpha: float) -> Tensor:
    """The distribution a token is drawn from: q, p, or p̃ = α·p + (1−α)·q in probability space."""
    if source == "student":
        return lq.exp()
    if source == "teacher":
        return lp.exp()
    return alpha * lp.exp() + (1.0 - alpha) * lq.exp()


def _score(model: torch.nn.Module, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor,
           response_mask: Tensor) -> Tensor:
    """log model(y_t | y<t, x) of given responses with one teacher-forced forward (0 where masked)."""
    batch = reference_batch(prompt_ids, prompt_mask, response_ids, response_mask)
    logits = response_logits(model, batch).float()
    tokens = response_ids.to(logits.device)[:, :, None]
    out = (logits.gather(2, tokens)[:, :, 0] - torch.logsumexp(logits, dim=-1)).to(response_ids.device)
    return torch.where(response_mask.bool(), out, 0.0)


# --------------------------------------------------------------------------- teacher forcing


def reference_batch(prompt_ids: Tensor, prompt_mask: Tensor, ref_ids: Tensor, ref_mask: Tensor) -> ScoredBatch:
    """Ground-truth responses, teacher-forced: no rollout scores (source 'reference')."""
    if ref_ids.shape != ref_mask.shape:
        raise ValueError(f"ref_ids {tuple(ref_ids.shape)} and ref_mask {tuple(ref_mask.shape)} differ in shape")
    if ref_ids.shape[0] != prompt_ids.shape[0]:
        raise ValueError("prompts and references have different batch sizes")
    device = prompt_ids.device
    ref_ids, ref_mask = ref_ids.to(device), ref_mask.to(device)
    return ScoredBatch(
        input_ids=torch.cat([prompt_ids, ref_ids], dim=1),
        attention_mask=torch.cat([prompt_mask.long(), ref_mask.long()], dim=1),
        prompt_len=prompt_ids.shape[1],
        response_ids=ref_ids,
        response_mask=ref_mask.float(),
        old_logprobs=None,
        teacher_logprobs=None,
        weights=None,
        source="reference",
        timings={"sampling": 0.0},
    )


def response_logits(model: torch.nn.Module, batch: ScoredBatch) -> Tensor:
    """[B, T, V] logits (model dtype) where position t predicts y_t; grads flow if enabled."""
    device = model_device(model)
    input_ids = batch.input_ids.to(device)
    mask = batch.attention_mask.to(device)
    prompt_len, length = batch.prompt_len, batch.response_ids.shape[1]
    extra = {"logits_to_keep": length + 1} if _accepts_logits_to_keep(model) else {}
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                use_cache=False, **extra)
    logits = out.logits
    if extra:
        return logits[:, :-1]  # the kept positions are P-1 .. P+T-1
    return logits[:, prompt_len - 1: prompt_len + length - 1]


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def greedy_generate(
    model: torch.nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
) -> tuple[Tensor, Tensor]:
    """Greedy (argmax) continuations for evaluation: (ids [B, T], mask [B, T] incl. EOS)."""
    device = model_device(model)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device).long()
    with _EvalMode(model):
        lm = _CachedLM(model, prompt_ids, prompt_mask, device)
        finished = torch.zeros(prompt_ids.shape[0], dtype=torch.bool, device=device)
        ids, masks = [], []
        for step in range(max_new_tokens):
            alive = ~finished
            token = torch.where(alive, lm.logprobs.argmax(-1), torch.full_like(finished, pad_token_id, dtype=torch.long))
            ids.append(token)
            masks.append(alive)
            finished = finished | (alive & (token == eos_token_id))
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            lm.step(token)
    if not ids:
        empty = torch.zeros(prompt_ids.shape[0], 0, dtype=torch.long, device=device)
        return empty, empty.clone()
    return torch.stack(ids, dim=1), torch.stack(masks, dim=1).long()
