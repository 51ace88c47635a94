"""Exact expectations by exhaustive enumeration on a tiny autoregressive problem.

Vocabulary V = 3, fixed length T = 3 (no EOS). Student and teacher are explicit tables of logits,
one row per prefix y<t (1 + 3 + 9 = 13 rows); the student's table is a free float64 parameter θ.
Every one of the V^T = 27 sequences is enumerated with its exact probability under the sampling
distribution, so every "E[...]" below is an exact sum, not a Monte-Carlo estimate.

What the spec asks the suite to show:
(a) importance weights: E_{p̃}[w_t | y<t] = 1 for every prefix and 0 < w_t ≤ 1/(1−α);
(b) single-step term: `weighted` and `unweighted` have the same expected gradient under
    teacher-mixed sampling; only the variance differs (both variances are printed);
(c) under student sampling at θ = θ_old, E[∇(L_single + L_long)] (s = t+1, γ = 1, no length norm,
    no whitening, clipping inactive) equals ∇ KL(Q_θ ‖ P) / T for the sequence-level reverse KL;
(d) the defined endpoints of jsd/skl/srkl.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from minillm_dash.losses import (
    importance_weights,
    long_term_loss,
    minillm_advantages,
    single_step_loss,
    token_divergence,
    token_logprobs,
)

F64 = torch.float64
V, T = 3, 3
ALPHA = 0.2
PREFIXES = [p for n in range(T) for p in itertools.product(range(V), repeat=n)]
ROW = {p: i for i, p in enumerate(PREFIXES)}
SEQUENCES = list(itertools.product(range(V), repeat=T))
MASK = torch.ones(1, T, dtype=F64)


def make_tables(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    theta = (torch.randn(len(PREFIXES), V, generator=g, dtype=F64) * 1.5).requires_grad_(True)
    teacher = torch.randn(len(PREFIXES), V, generator=g, dtype=F64) * 1.5
    return theta, teacher


def seq_logits(table: torch.Tensor, seq: tuple[int, ...]) -> torch.Tensor:
    """[1, T, V] logits of a table along one sequence: position t is the row of prefix y<t."""
    return torch.stack([table[ROW[seq[:t]]] for t in range(T)]).unsqueeze(0)


def seq_prob(dists: dict[tuple[int, ...], torch.Tensor], seq: tuple[int, ...]) -> float:
    return math.prod(float(dists[seq[:t]][seq[t]]) for t in range(T))


def mixed_dists(theta, teacher, alpha):
    q = torch.softmax(theta.detach(), -1)
    p = torch.softmax(teacher, -1)
    return {pre: alpha * p[ROW[pre]] + (1 - alpha) * q[ROW[pre]] for pre in PREFIXES}


def expectation_and_variance(probs: list[float], grads: list[torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Exact mean gradient and total variance (trace of the covariance) under `probs`."""
    assert abs(sum(probs) - 1.0) < 1e-12
    mean = sum(p * g for p, g in zip(probs, grads))
    var = sum(p * float(((g - mean) ** 2).sum()) for p, g in zip(probs, grads))
    return mean, var


# ----------------------------------------------------------------------------- (a)


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5, 0.9])
def test_importance_weight_has_unit_conditional_mean_and_bounds(alpha):
    theta, teacher = make_tables()
    lq_all = torch.log_softmax(theta.detach(), -1)
    lp_all = torch.log_softmax(teacher, -1)
    mix = alpha * lp_all.exp() + (1 - alpha) * lq_all.exp()
    for pre in PREFIXES:
        i = ROW[pre]
        w = importance_weights(lq_all[i], lp_all[i], alpha)  # w(v) for every next token v
        mean = float((mix[i] * w).sum())
        assert abs(mean - 1.0) < 1e-12, f"prefix {pre}: E_p~[w] = {mean}"
        assert (w > 0).all(), f"prefix {pre}: w = {w}"
        assert (w <= 1.0 / (1.0 - alpha) + 1e-12).all(), f"prefix {pre}: w = {w} > 1/(1-α)"


# ----------------------------------------------------------------------------- (b)


def test_weighted_and_unweighted_single_step_share_expected_gradient():
    theta, teacher = make_tables(1)
    dists = mixed_dists(theta, teacher, ALPHA)
    probs, g_w, g_u = [], [], []
    for seq in SEQUENCES:
        y = torch.tensor([seq])
        sl, tl = seq_logits(theta, seq), seq_logits(teacher, seq)
        w = importance_weights(token_logprobs(sl.detach(), y), token_logprobs(tl, y), ALPHA)
        (gw,) = torch.autograd.grad(single_step_loss(sl, tl, MASK, w), theta)
        (gu,) = torch.autograd.grad(single_step_loss(sl, tl, MASK), theta)
        probs.append(seq_prob(dists, seq))
        g_w.append(gw)
        g_u.append(gu)
    mean_w, var_w = expectation_and_variance(probs, g_w)
    mean_u, var_u = expectation_and_variance(probs, g_u)
    print(
        f"\n[single-step, mixed sampling α={ALPHA}] total gradient variance: "
        f"weighted={var_w:.6g} unweighted={var_u:.6g} (ratio {var_w / var_u:.4g})"
    )
    assert mean_u.abs().max() > 1e-3, "degenerate problem: zero expected gradient"
    assert torch.allclose(mean_w, mean_u, rtol=1e-10, atol=1e-12), (
        f"expected grad weighted={mean_w} unweighted={mean_u}"
    )
    assert not math.isclose(var_w, var_u, rel_tol=1e-6), f"variances weighted={var_w} unweighted={var_u}"
    # control: a wrong weight (w² instead of w, E[w²|y<t] ≠ 1) does change the expected gradient
    g_bad = []
    for seq in SEQUENCES:
        y = torch.tensor([seq])
        sl, tl = seq_logits(theta, seq), seq_logits(teacher, seq)
        w = importance_weights(token_logprobs(sl.detach(), y), token_logprobs(tl, y), ALPHA)
        (gb,) = torch.autograd.grad(single_step_loss(sl, tl, MASK, w**2), theta)
        g_bad.append(gb)
    mean_bad, _ = expectation_and_variance(probs, g_bad)
    assert not torch.allclose(mean_bad, mean_u, rtol=1e-6, atol=1e-9), (
        f"control should differ: grad w²={mean_bad} unweighted={mean_u}"
    )


# ----------------------------------------------------------------------------- (c)


def sequence_kl_gradient(theta, teacher) -> torch.Tensor:
    """∇θ KL(Q_θ ‖ P) over whole sequences, by enumeration and autograd."""
    lq = torch.log_softmax(theta, -1)
    lp = torch.log_softmax(teacher, -1)
    kl = 0.0
    for seq in SEQUENCES:
        log_q = sum(lq[ROW[seq[:t]], seq[t]] for t in range(T))
        log_p = sum(lp[ROW[seq[:t]], seq[t]] for t in range(T))
        kl = kl + log_q.exp() * (log_q - log_p)
    (grad,) = torch.autograd.grad(kl, theta)
    return grad


def expected_minillm_gradient(theta, teacher, *, include_current: bool) -> torch.Tensor:
    """E_{y~q_θ}[∇(L_single + L_long)] at θ = θ_old (old log-probs = current, detached)."""
    q = torch.softmax(theta.detach(), -1)
    dists = {pre: q[ROW[pre]] for pre in PREFIXES}
    probs, grads = [], []
    for seq in SEQUENCES:
        y = torch.tensor([seq])
        sl, tl = seq_logits(theta, seq), seq_logits(teacher, seq)
        logprobs = token_logprobs(sl, y)
        old = logprobs.detach()
        rewards = token_logprobs(tl, y) - old
        adv = minillm_advantages(
            rewards, MASK, gamma=1.0, include_current=include_current, length_norm=False, whiten=False
        )
        # ρ = 1 at θ = θ_old; a huge ε keeps clipping inactive anyway
        loss = single_step_loss(sl, tl, MASK) + long_term_loss(logprobs, old, adv, MASK, clip=100.0)
        (g,) = torch.autograd.grad(loss, theta)
        probs.append(seq_prob(dists, seq))
        grads.append(g)
    mean, _ = expectation_and_variance(probs, grads)
    return mean


@pytest.mark.parametrize("seed", [2, 3])
def test_single_plus_long_is_the_sequence_kl_gradient(seed):
    theta, teacher = make_tables(seed)
    exact = sequence_kl_gradient(theta, teacher) / T
    got = expected_minillm_gradient(theta, teacher, include_current=False)
    assert exact.abs().max() > 1e-3, "degenerate problem: zero gradient"
    assert torch.allclose(got, exact, rtol=1e-9, atol=1e-12), (
        f"expected grad minillm={got} exact_seq_kl/T={exact}"
    )


def test_include_current_counts_the_current_token_twice():
    """Control showing (c) discriminates: with s = t the return's r_t duplicates, in expectation,
    the single-step term's gradient, so the sum is ∇KL/T + E[Σ_t ∇KLR_t]/T instead of ∇KL/T."""
    theta, teacher = make_tables(2)
    exact = sequence_kl_gradient(theta, teacher) / T
    got = expected_minillm_gradient(theta, teacher, include_current=True)
    assert not torch.allclose(got, exact, rtol=1e-6, atol=1e-9), (
        f"expected a difference: grad include_current={got} exact_seq_kl/T={exact}"
    )
    q = torch.softmax(theta.detach(), -1)
    dists = {pre: q[ROW[pre]] for pre in PREFIXES}
    single = []
    for seq in SEQUENCES:
        sl, tl = seq_logits(theta, seq), seq_logits(teacher, seq)
        (g,) = torch.autograd.grad(single_step_loss(sl, tl, MASK), theta)
        single.append(g)
    mean_single, _ = expectation_and_variance([seq_prob(dists, s) for s in SEQUENCES], single)
    assert torch.allclose(got, exact + mean_single, rtol=1e-9, atol=1e-12), (
        f"expected grad include_current={got} exact+single={exact + mean_single}"
    )


# ----------------------------------------------------------------------------- (d)


def test_jsd_endpoints_and_skl_srkl_at_zero():
    g = torch.Generator().manual_seed(4)
    s = torch.randn(2, 3, 5, generator=g, dtype=F64) * 2
    t = torch.randn(2, 3, 5, generator=g, dtype=F64) * 2
    fkl = token_divergence("fkl", s, t)
    rkl = token_divergence("rkl", s, t)
    # The spec *defines* jsd(β=0) = KLF and jsd(β=1) = KLR. The generalised JSD itself tends to 0 at
    # both ends (≈ β·KLF near 0, ≈ (1−β)·KLR near 1, up to O(β²) terms), so the definition makes
    # a deliberate jump.
    torch.testing.assert_close(token_divergence("jsd", s, t, beta=0.0), fkl, rtol=0, atol=0)
    torch.testing.assert_close(token_divergence("jsd", s, t, beta=1.0), rkl, rtol=0, atol=0)
    eps = 1e-7
    near0 = token_divergence("jsd", s, t, beta=eps)
    near1 = token_divergence("jsd", s, t, beta=1 - eps)
    assert (near0 < 1e-5).all() and (near1 < 1e-5).all(), f"near-endpoint jsd {near0} {near1}"
    torch.testing.assert_close(near0 / eps, fkl, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(near1 / eps, rkl, rtol=1e-4, atol=1e-8)
    # skl(α)=KL(p‖αp+(1−α)q) and srkl(α)=KL(q‖(1−α)p+αq) reduce to fkl and rkl at α=0, and are
    # continuous there (α=1e-9 goes through the general log-space mixture path; the gap is O(α·χ²))
    torch.testing.assert_close(token_divergence("skl", s, t, alpha=0.0), fkl, rtol=0, atol=0)
    torch.testing.assert_close(token_divergence("srkl", s, t, alpha=0.0), rkl, rtol=0, atol=0)
    torch.testing.assert_close(token_divergence("skl", s, t, alpha=1e-9), fkl, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(token_divergence("srkl", s, t, alpha=1e-9), rkl, rtol=1e-5, atol=1e-9)
