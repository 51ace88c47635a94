"""From a variant's switches and one scored batch to its loss terms (all math lives in `losses`).

Kept apart from the trainer so the mapping "config -> loss" is one small function that tests can
check term by term against the loss library.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from minillm_dash import losses
from minillm_dash.variants import VariantConfig


@dataclass
class LossTerms:
    """The total (with grad) and each weighted term (detached floats) for logging."""

    total: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)
    clip_fraction: float | None = None


@dataclass
class ScoredLogits:
    """What the objective needs about one scored batch: logits and the rollout's detached extras."""

    student_logits: torch.Tensor  # [B, T, V], with grad
    teacher_logits: torch.Tensor | None  # [B, T, V], no grad
    response_ids: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T]
    old_logprobs: torch.Tensor | None = None  # [B, T] log q_old(y_t)
    teacher_logprobs: torch.Tensor | None = None  # [B, T] log p(y_t)
    weights: torch.Tensor | None = None  # [B, T] w_t (mixed sampling) or None


def compute_loss(variant: VariantConfig, batch: ScoredLogits, lm_loss: torch.Tensor | None = None) -> LossTerms:
    """L = λ_ce·CE + λ_div·D + L_single + L_long + λ_lm·L_lm, as `spec/losses.md` defines each term.

    `lm_loss` is the student's cross-entropy on reference responses (computed by the caller on a
    separate teacher-forced batch); it is skipped when the dataset has no references.
    """
    parts: dict[str, torch.Tensor] = {}
    mask = batch.mask.to(batch.student_logits.dtype)
    if variant.ce_coef > 0:
        parts["ce"] = variant.ce_coef * losses.cross_entropy(batch.student_logits, batch.response_ids, mask)
    if variant.divergence is not None and variant.divergence_coef > 0:
        per_token = losses.token_divergence(
            variant.divergence, batch.student_logits, _teacher(batch), beta=variant.beta,
            alpha=variant.skew_alpha, mu=variant.mu, temperature=variant.loss_temperature)
        parts["divergence"] = variant.divergence_coef * losses.masked_mean(per_token, mask)
    if variant.single != "off":
        weights = batch.weights if variant.single == "weighted" else None
        parts["single"] = losses.single_step_loss(batch.student_logits, _teacher(batch), mask, weights)
    clip_fraction = None
    if variant.long_term:
        parts["long"], clip_fraction = _long_term(variant, batch, mask)
    if variant.lm_coef > 0 and lm_loss is not None:
        parts["lm"] = variant.lm_coef * lm_loss
    total = torch.stack(list(parts.values())).sum()
    return LossTerms(total=total, terms={k: float(v.detach()) for k, v in parts.items()},
                     clip_fraction=clip_fraction)


def _teacher(batch: ScoredLogits) -> torch.Tensor:
    if batch.teacher_logits is None:
        raise ValueError("this variant needs teacher logits but the batch has none")
    return batch.teacher_logits


def _long_term(variant: VariantConfig, batch: ScoredLogits, mask: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Policy-gradient term: rewards log p − log q_old, returns, advantages, clipped ratio with w_t."""
    if batch.old_logprobs is None or batch.teacher_logprobs is None:
        raise ValueError("the long-term term needs sampled sequences with old and teacher log-probs")
    rewards = (batch.teacher_logprobs - batch.old_logprobs).detach()
    advantages = losses.minillm_advantages(
        rewards, mask, gamma=variant.gamma, include_current=variant.include_current,
        length_norm=variant.length_norm, whiten=variant.whiten)
    logprobs = losses.token_logprobs(batch.student_logits, batch.response_ids)
    loss = losses.long_term_loss(logprobs, batch.old_logprobs, advantages, mask, weights=batch.weights,
                                 clip=variant.clip)
    fraction = losses.clip_fraction(logprobs.detach(), batch.old_logprobs, batch.weights, mask, variant.clip)
    return loss, float(fraction)
