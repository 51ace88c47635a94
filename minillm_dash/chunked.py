"""Memory-frugal full-vocabulary divergences.

A naive divergence materialises several [B, T, V] tensors (both models' logits, log-softmaxes,
probabilities) and autograd keeps most of them for the backward pass; with V ≈ 50k and B·T in the
thousands that is gigabytes. Here the tokens are processed in chunks, each under
`torch.utils.checkpoint`: the forward pass keeps only the chunk's inputs (hidden states are views,
the output matrix is shared), and the backward pass recomputes one chunk's logits at a time. Peak
memory then scales with chunk_tokens × V instead of B × T × V, for the price of one extra logits
matmul per chunk in the backward pass.

The per-chunk math is `losses.token_divergence` itself, so values and gradients are those of the
naive path (up to float rounding).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from minillm_dash.losses import DIVERGENCES, token_divergence

__all__ = ["chunked_token_divergence", "chunked_divergence_from_logits"]


def _chunk_from_hidden(
    s_hidden: Tensor,
    s_weight: Tensor,
    s_bias: Tensor | None,
    t_hidden: Tensor,
    t_weight: Tensor,
    t_bias: Tensor | None,
    name: str,
    kwargs: dict[str, Any],
) -> Tensor:
    """[C,H] hidden states of one chunk -> [C] divergences (teacher logits never tracked)."""
    s_logits = F.linear(s_hidden, s_weight, s_bias)
    with torch.no_grad():
        t_logits = F.linear(t_hidden, t_weight, t_bias)
    return token_divergence(name, s_logits.unsqueeze(0), t_logits.unsqueeze(0), **kwargs).squeeze(0)


def _chunk_from_logits(s_logits: Tensor, t_logits: Tensor, name: str, kwargs: dict[str, Any]) -> Tensor:
    return token_divergence(name, s_logits.unsqueeze(0), t_logits.unsqueeze(0), **kwargs).squeeze(0)


def _check_args(name: str, chunk_tokens: int) -> None:
    if name not in DIVERGENCES:
        raise ValueError(f"unknown divergence {name!r}; valid names: {', '.join(DIVERGENCES)}")
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be ≥ 1, got {chunk_tokens}")


def chunked_token_divergence(
    name: str,
    student_hidden: Tensor,
    student_weight: Tensor,
    teacher_hidden: Tensor,
    teacher_weight: Tensor,
    *,
    student_bias: Tensor | None = None,
    teacher_bias: Tensor | None = None,
    chunk_tokens: int = 256,
    **div_kwargs: Any,
) -> Tensor:
    """`token_divergence` from final hidden states and output matrices, [B,T,H] + [V,H] -> [B,T].

    Logits = hidden @ weight.T (+ bias), computed chunk by chunk under checkpointing, so neither
    the forward nor the backward pass ever holds more than one chunk's [chunk_tokens, V] logits.
    Student and teacher may have different hidden sizes but must share V. Gradients reach the
    student's hidden states, weight and bias; the teacher's inputs are never tracked.
    `div_kwargs` are token_divergence's (beta, alpha, mu, temperature).
    """
    _check_args(name, chunk_tokens)
    if student_hidden.shape[:-1] != teacher_hidden.shape[:-1]:
        raise ValueError(
            f"student and teacher hidden states cover different tokens: "
            f"{tuple(student_hidden.shape)} vs {tuple(teacher_hidden.shape)}"
        )
    if student_weight.shape[0] != teacher_weight.shape[0]:
        raise ValueError(
            f"student and teacher vocabularies differ: {student_weight.shape[0]} vs "
            f"{teacher_weight.shape[0]} (they must share one vocabulary)"
        )
    lead = student_hidden.shape[:-1]
    s_flat = student_hidden.reshape(-1, student_hidden.shape[-1])
    t_flat = teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1])
    t_weight = teacher_weight.detach()
    t_bias = None if teacher_bias is None else teacher_bias.detach()
    track = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (student_hidden, student_weight, student_bias)
    )
    outs = []
    for start in range(0, s_flat.shape[0], chunk_tokens):
        args = (
            s_flat[start : start + chunk_tokens],
            student_weight,
            student_bias,
            t_flat[start : start + chunk_tokens],
            t_weight,
            t_bias,
            name,
            div_kwargs,
        )
        if track:
            outs.append(checkpoint(_chunk_from_hidden, *args, use_reentrant=False))
        else:
            outs.append(_chunk_from_hidden(*args))
    if not outs:  # zero tokens
        return student_hidden.new_zeros(lead)
    return torch.cat(outs).reshape(lead)


def chunked_divergence_from_logits(
    name: str,
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    chunk_tokens: int = 256,
    **div_kwargs: Any,
) -> Tensor:
    """`token_divergence` on existing [B,T,V] logits, chunked and checkpointed, -> [B,T].

    The logits themselves stay in memory, but the divergence's own intermediates (log-softmaxes,
    probabilities, mixtures: several more [B,T,V] tensors) exist for one chunk at a time only.
    """
    _check_args(name, chunk_tokens)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
            f"{tuple(teacher_logits.shape)} (they must share one vocabulary)"
        )
    lead = student_logits.shape[:-1]
    s_flat = student_logits.reshape(-1, student_logits.shape[-1])
    t_flat = teacher_logits.detach().reshape(-1, teacher_logits.shape[-1])
    track = torch.is_grad_enabled() and student_logits.requires_grad
    outs = []
    for start in range(0, s_flat.shape[0], chunk_tokens):
        args = (s_flat[start : start + chunk_tokens], t_flat[start : start + chunk_tokens], name, div_kwargs)
        if track:
            outs.append(checkpoint(_chunk_from_logits, *args, use_reentrant=False))
        else:
            outs.append(_chunk_from_logits(*args))
    if not outs:
        return student_logits.new_zeros(lead)
    return torch.cat(outs).reshape(lead)
