"""Pure tensor math of the loss spec (`shared/spec/losses.md`): divergences, MiniLLM terms, helpers.

Conventions shared by every function here:
- logits are [B, T, V], aligned so that position t predicts y_t; per-token values and masks are [B, T];
- the teacher never receives a gradient (its logits are detached inside);
- 0·log 0 = 0: vocabulary entries with zero probability (e.g. -inf logits) contribute nothing and
  produce neither NaN values nor NaN gradients. A divergence that is genuinely infinite (reverse KL
  where the student puts mass on a token the teacher forbids) is returned as +inf;
- padding may hold anything (even inf/NaN log-probs): masked positions are selected away with
  `torch.where` before any reduction, so they never poison a sum or a gradient;
- device- and dtype-agnostic: everything follows the dtype/device of the inputs (float32/float64,
  CPU/CUDA).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "DIVERGENCES",
    "token_divergence",
    "masked_mean",
    "importance_weights",
    "single_step_loss",
    "minillm_advantages",
    "long_term_loss",
    "token_logprobs",
    "cross_entropy",
    "entropy",
    "clip_fraction",
]

DIVERGENCES: tuple[str, ...] = ("fkl", "rkl", "jsd", "tvd", "skl", "srkl", "akl")


# ----------------------------------------------------------------------------- building blocks


def _kl(log_a: Tensor, log_b: Tensor) -> Tensor:
    """KL(a‖b) over the last dim from log-probabilities, with 0·log0 = 0.

    Entries where a == 0 are replaced by finite dummies *before* the arithmetic, so that neither
    the value nor the gradient sees `0 * (-inf - -inf)`.
    """
    a = log_a.exp()
    support = a > 0
    zero = torch.zeros((), dtype=log_a.dtype, device=log_a.device)
    la = torch.where(support, log_a, zero)
    lb = torch.where(support, log_b, zero)
    return (torch.where(support, a, zero) * (la - lb)).sum(-1)


def _log_mix(log_a: Tensor, log_b: Tensor, weight_a: float) -> Tensor:
    """log(w·a + (1−w)·b) computed stably in log space (logaddexp), exact at w ∈ {0, 1}.

    Where both a and b are 0 the result is -inf; the inputs there are made finite first so the
    backward pass of logaddexp never evaluates exp(-inf - -inf).
    """
    if weight_a <= 0.0:
        return log_b
    if weight_a >= 1.0:
        return log_a
    x = log_a + math.log(weight_a)
    y = log_b + math.log1p(-weight_a)
    finite = torch.maximum(x, y) > float("-inf")
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    out = torch.logaddexp(torch.where(finite, x, zero), torch.where(finite, y, zero))
    return torch.where(finite, out, torch.full_like(out, float("-inf")))


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


def _akl_weights(p: Tensor, q: Tensor, mu: float) -> tuple[Tensor, Tensor]:
    """AKL's head/tail weights g_h/(g_h+g_t), g_t/(g_h+g_t); no gradient (teacher fixed, q detached).

    Head = tokens whose inclusive cumulative teacher probability (sorted descending, stable sort)
    is ≤ μ, plus the top token. If p == q exactly (g_h + g_t = 0) both weights are 0: the value is 0
    anyway and so is every KL gradient.
    """
    p = p.detach()
    q = q.detach()
    p_sorted, order = torch.sort(p, dim=-1, descending=True, stable=True)
    q_sorted = q.gather(-1, order)
    err = (p_sorted - q_sorted).abs()
    head = torch.cumsum(p_sorted, dim=-1) <= mu
    head[..., 0] = True
    zero = torch.zeros((), dtype=err.dtype, device=err.device)
    g_head = torch.where(head, err, zero).sum(-1)
    g_tail = torch.where(head, zero, err).sum(-1)
    total = g_head + g_tail
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return g_head / safe, g_tail / safe


# ----------------------------------------------------------------------------- divergences


def token_divergence(
    name: str,
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    beta: float = 0.5,
    alpha: float = 0.1,
    mu: float = 0.5,
    temperature: float = 1.0,
) -> Tensor:
    """Per-token divergence between full next-token distributions, [B,T,V] x2 -> [B,T].

    Pathwise: the gradient flows through the student's logits only. `temperature` divides both
    models' logits (loss temperature, separate from sampling). See the spec table for each name;
    jsd(β=0) is *defined* as KLF and jsd(β=1) as KLR (the generalised JSD itself tends to 0 there,
    so the endpoints are a deliberate jump).
    """
    if name not in DIVERGENCES:
        raise ValueError(f"unknown divergence {name!r}; valid names: {', '.join(DIVERGENCES)}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
            f"{tuple(teacher_logits.shape)} (they must share one vocabulary)"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    teacher_logits = teacher_logits.detach().to(student_logits.dtype)
    if temperature != 1.0:
        student_logits = student_logits / temperature
        teacher_logits = teacher_logits / temperature
    lq = torch.log_softmax(student_logits, dim=-1)
    lp = torch.log_softmax(teacher_logits, dim=-1)

    if name == "fkl":
        return _kl(lp, lq)
    if name == "rkl":
        return _kl(lq, lp)
    if name == "jsd":
        _check_unit("beta", beta)
        if beta == 0.0:
            return _kl(lp, lq)
        if beta == 1.0:
            return _kl(lq, lp)
        lm = _log_mix(lp, lq, beta)
        return beta * _kl(lp, lm) + (1.0 - beta) * _kl(lq, lm)
    if name == "tvd":
        return 0.5 * (lp.exp() - lq.exp()).abs().sum(-1)
    if name == "skl":
        _check_unit("alpha", alpha)
        return _kl(lp, _log_mix(lp, lq, alpha))
    if name == "srkl":
        _check_unit("alpha", alpha)
        return _kl(lq, _log_mix(lp, lq, 1.0 - alpha))
    # akl
    w_head, w_tail = _akl_weights(lp.exp(), lq.exp(), mu)
    return w_head * _kl(lp, lq) + w_tail * _kl(lq, lp)


# ----------------------------------------------------------------------------- reductions, weights


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Σ m·v / Σ m over the whole batch: ONE global token count, so long sequences weigh more.

    Padding values are selected away (never multiplied), so inf/NaN there is harmless. An all-zero
    mask returns 0 (denominator clamped to ≥ 1) rather than raising: an empty batch contributes
    nothing to the loss.
    """
    m = mask.to(values.dtype)
    v = torch.where(m != 0, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return (v * m).sum() / m.sum().clamp(min=1.0)


def importance_weights(student_logprobs: Tensor, teacher_logprobs: Tensor, alpha: float) -> Tensor:
    """w_t = q_old(y_t) / (α·p(y_t) + (1−α)·q_old(y_t)), in log space, detached.

    Corrects teacher-mixed sampling back to the student's distribution: E_{p̃}[w] = 1 and
    0 < w ≤ 1/(1−α). α = 0 gives exactly 1.
    """
    _check_unit("alpha", alpha)
    lq = student_logprobs.detach()
    lp = teacher_logprobs.detach().to(lq.dtype)
    if alpha == 0.0:
        return torch.ones_like(lq)
    return (lq - _log_mix(lp, lq, alpha)).exp()


def single_step_loss(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, weights: Tensor | None = None
) -> Tensor:
    """MiniLLM's single-step term: Σ m·w·KLR_t / Σ m (w = 1 when `weights` is None; w detached).

    KLR_t depends on y<t only, so E[w_t | y<t] = 1 makes weighted and unweighted unbiased for the
    same gradient; the weights only change the variance.
    """
    klr = token_divergence("rkl", student_logits, teacher_logits)
    if weights is not None:
        # zero the weights at padding first: a NaN weight there would leak into the gradient as 0·NaN
        zero = torch.zeros((), dtype=klr.dtype, device=klr.device)
        klr = klr * torch.where(mask != 0, weights.detach().to(klr.dtype), zero)
    return masked_mean(klr, mask)


def minillm_advantages(
    rewards: Tensor,
    mask: Tensor,
    *,
    gamma: float = 1.0,
    include_current: bool = True,
    length_norm: bool = True,
    whiten: bool = True,
) -> Tensor:
    """Returns (optionally normalised and whitened) for the long-term policy-gradient term; detached.

    G_t = Σ_{t' ≥ s, m_t' = 1} γ^(t'−s)·r_t' with s = t (`include_current`, LMOps) or s = t+1 (the
    paper's R_{t+1}). The exponent is the *position* difference t'−s (relative to s, never absolute):
    a padding position in the middle of a sequence contributes no reward and is not counted, but it
    still occupies a position, so the discount keeps running across it.
    `length_norm` divides G_t by the number of valid tokens the sum covers (G_t = 0 if none).
    `whiten`: A = (G − mean)/sqrt(var + 1e-8), mean and unbiased variance over the batch's valid
    tokens only (the variance's denominator is clamped to ≥ 1, so a single valid token gives A = 0).
    Padding positions of the output are 0.
    """
    r = rewards.detach()
    valid = mask.detach() != 0
    zero = torch.zeros((), dtype=r.dtype, device=r.device)
    r = torch.where(valid, r, zero)
    m = valid.to(r.dtype)

    returns = torch.zeros_like(r)
    counts = torch.zeros_like(r)
    acc = torch.zeros_like(r[:, 0])
    cnt = torch.zeros_like(r[:, 0])
    for t in range(r.shape[1] - 1, -1, -1):
        if not include_current:  # G_t covers t+1.. : store before adding step t
            returns[:, t], counts[:, t] = acc, cnt
        acc = r[:, t] + gamma * acc
        cnt = m[:, t] + cnt
        if include_current:
            returns[:, t], counts[:, t] = acc, cnt

    if length_norm:
        returns = torch.where(counts > 0, returns / counts.clamp(min=1.0), zero)
    if whiten:
        n = m.sum()
        mean = (returns * m).sum() / n.clamp(min=1.0)
        var = (((returns - mean) * m) ** 2).sum() / (n - 1.0).clamp(min=1.0)
        returns = (returns - mean) / torch.sqrt(var + 1e-8)
    return torch.where(valid, returns, zero)


def _ratio(logprobs: Tensor, old_logprobs: Tensor, weights: Tensor | None, valid: Tensor) -> Tensor:
    """ρ = exp(log q_θ − log q_old)·w; padding differences are zeroed first so exp never overflows."""
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    diff = torch.where(valid, logprobs - old_logprobs.detach().to(logprobs.dtype), zero)
    rho = diff.exp()
    if weights is not None:
        rho = rho * torch.where(valid, weights.detach().to(rho.dtype), zero)
    return rho


def long_term_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    weights: Tensor | None = None,
    clip: float = 0.2,
) -> Tensor:
    """Clipped policy-gradient (score-function) term: masked mean of max(−A·ρ, −A·clip(ρ, 1±ε)).

    ρ includes the importance weight w_t (mixed sampling). Only `logprobs` carries a gradient;
    old log-probs, advantages and weights are detached.
    """
    valid = mask != 0
    rho = _ratio(logprobs, old_logprobs, weights, valid)
    zero = torch.zeros((), dtype=rho.dtype, device=rho.device)
    adv = torch.where(valid, advantages.detach().to(rho.dtype), zero)
    unclipped = -adv * rho
    clipped = -adv * rho.clamp(1.0 - clip, 1.0 + clip)
    return masked_mean(torch.maximum(unclipped, clipped), mask)


def clip_fraction(
    logprobs: Tensor, old_logprobs: Tensor, weights: Tensor | None, mask: Tensor, clip: float
) -> Tensor:
    """Fraction of valid tokens whose ratio ρ (incl. w) lies outside [1−ε, 1+ε]; a diagnostic."""
    valid = mask != 0
    with torch.no_grad():
        rho = _ratio(logprobs, old_logprobs, weights, valid)
        outside = ((rho < 1.0 - clip) | (rho > 1.0 + clip)).to(rho.dtype)
        return masked_mean(outside, mask)


# ----------------------------------------------------------------------------- helpers


def token_logprobs(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(logits/τ)[y_t], [B,T,V] + [B,T] -> [B,T], without materialising a log_softmax.

    `tokens` must be valid vocabulary indices everywhere (use the pad id, not -100, at padding).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def cross_entropy(logits: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
    """Masked-mean negative log-likelihood of `tokens` (one global token count)."""
    return masked_mean(-token_logprobs(logits, tokens), mask)


def entropy(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) per position, [B,T,V] -> [B,T], with 0·log0 = 0."""
    logq = torch.log_softmax(logits, dim=-1)
    q = logq.exp()
    zero = torch.zeros((), dtype=logq.dtype, device=logq.device)
    support = q > 0
    return -(torch.where(support, q, zero) * torch.where(support, logq, zero)).sum(-1)
