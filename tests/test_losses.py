"""Every public function of `minillm_dash.losses` against a naive float64 reference.

The references below are deliberately dumb: Python loops over batch, positions and vocabulary on
plain floats (`math`), straight from the formulas of `shared/spec/losses.md`. Inputs are random, with
padding both in the middle and at the end of sequences.
"""

from __future__ import annotations

import math

import pytest
import torch

from minillm_dash.losses import (
    DIVERGENCES,
    clip_fraction,
    cross_entropy,
    entropy,
    importance_weights,
    long_term_loss,
    masked_mean,
    minillm_advantages,
    single_step_loss,
    token_divergence,
    token_logprobs,
)

F64 = torch.float64
NEG_INF = float("-inf")
# padding in the middle (row 0) and at the end (row 1)
MASK = torch.tensor([[1, 1, 0, 1, 1, 0], [1, 1, 1, 1, 0, 0]], dtype=F64)
B, T, V = 2, 6, 7

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA unavailable")
    ),
]

# (name, kwargs) covering every divergence, non-default parameters and the jsd/skl/srkl endpoints
CASES = [
    ("fkl", {}),
    ("rkl", {}),
    ("jsd", {"beta": 0.5}),
    ("jsd", {"beta": 0.2}),
    ("jsd", {"beta": 0.0}),
    ("jsd", {"beta": 1.0}),
    ("tvd", {}),
    ("skl", {"alpha": 0.1}),
    ("skl", {"alpha": 0.4}),
    ("srkl", {"alpha": 0.1}),
    ("srkl", {"alpha": 0.4}),
    ("akl", {"mu": 0.5}),
    ("akl", {"mu": 0.8}),
]


# ----------------------------------------------------------------------------- naive references


def n_softmax(row: list[float], tau: float = 1.0) -> list[float]:
    xs = [x / tau for x in row]
    mx = max(xs)
    ex = [math.exp(x - mx) for x in xs]
    s = sum(ex)
    return [e / s for e in ex]


def n_kl(a: list[float], b: list[float]) -> float:
    total = 0.0
    for ai, bi in zip(a, b):
        if ai > 0:
            if bi <= 0:
                return math.inf
            total += ai * (math.log(ai) - math.log(bi))
    return total


def n_mix(a: list[float], b: list[float], w: float) -> list[float]:
    return [w * ai + (1 - w) * bi for ai, bi in zip(a, b)]


def n_akl_weights(p: list[float], q: list[float], mu: float) -> tuple[float, float]:
    order = sorted(range(len(p)), key=lambda i: -p[i])  # stable, like torch.sort(stable=True)
    cum, g_h, g_t = 0.0, 0.0, 0.0
    for rank, i in enumerate(order):
        cum += p[i]
        if rank == 0 or cum <= mu:
            g_h += abs(p[i] - q[i])
        else:
            g_t += abs(p[i] - q[i])
    if g_h + g_t == 0:
        return 0.0, 0.0
    return g_h / (g_h + g_t), g_t / (g_h + g_t)


def n_div(name, s_row, t_row, beta=0.5, alpha=0.1, mu=0.5, tau=1.0) -> float:
    q, p = n_softmax(s_row, tau), n_softmax(t_row, tau)
    if name == "fkl":
        return n_kl(p, q)
    if name == "rkl":
        return n_kl(q, p)
    if name == "jsd":
        if beta == 0:
            return n_kl(p, q)
        if beta == 1:
            return n_kl(q, p)
        m = n_mix(p, q, beta)
        return beta * n_kl(p, m) + (1 - beta) * n_kl(q, m)
    if name == "tvd":
        return 0.5 * sum(abs(pi - qi) for pi, qi in zip(p, q))
    if name == "skl":
        return n_kl(p, n_mix(p, q, alpha))
    if name == "srkl":
        return n_kl(q, n_mix(p, q, 1 - alpha))
    if name == "akl":
        wh, wt = n_akl_weights(p, q, mu)
        return wh * n_kl(p, q) + wt * n_kl(q, p)
    raise AssertionError(name)


def n_div_grad(name, s_row, t_row, mu=0.5, tau=1.0) -> list[float]:
    """d value / d student logits for fkl, rkl and akl (AKL's weights use a detached q)."""
    q, p = n_softmax(s_row, tau), n_softmax(t_row, tau)
    klr = n_kl(q, p)
    g_f = [(qi - pi) / tau for qi, pi in zip(q, p)]
    g_r = [
        (qi * (math.log(qi) - math.log(pi) - klr) / tau) if qi > 0 else 0.0 for qi, pi in zip(q, p)
    ]
    if name == "fkl":
        return g_f
    if name == "rkl":
        return g_r
    wh, wt = n_akl_weights(p, q, mu)
    return [wh * a + wt * b for a, b in zip(g_f, g_r)]


def n_per_token(fn, *tensors):
    """Apply a per-(b,t) naive function to rows of [B,T,V] tensors -> [B,T] tensor."""
    b_, t_ = tensors[0].shape[:2]
    rows = [[x[b][t].tolist() for x in tensors] for b in range(b_) for t in range(t_)]
    return torch.tensor([fn(*r) for r in rows], dtype=F64).reshape(b_, t_)


def n_log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def n_masked_mean(values, mask) -> float:
    num, den = 0.0, 0.0
    for b in range(values.shape[0]):
        for t in range(values.shape[1]):
            if mask[b][t] != 0:
                num += float(mask[b][t]) * float(values[b][t])
                den += float(mask[b][t])
    return num / den if den > 0 else 0.0


def n_advantages(rewards, mask, gamma, include_current, length_norm, whiten):
    b_, t_ = rewards.shape
    out = [[0.0] * t_ for _ in range(b_)]
    for b in range(b_):
        for t in range(t_):
            s = t if include_current else t + 1
            g, n = 0.0, 0
            for tp in range(s, t_):
                if mask[b][tp] != 0:
                    g += gamma ** (tp - s) * float(rewards[b][tp])
                    n += 1
            if length_norm:
                g = g / n if n > 0 else 0.0
            out[b][t] = g
    if whiten:
        vals = [out[b][t] for b in range(b_) for t in range(t_) if mask[b][t] != 0]
        mean = sum(vals) / len(vals)
        var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
        out = [[(v - mean) / math.sqrt(var + 1e-8) for v in row] for row in out]
    for b in range(b_):
        for t in range(t_):
            if mask[b][t] == 0:
                out[b][t] = 0.0
    return torch.tensor(out, dtype=F64)


def n_long_term(lp, old, adv, mask, w, clip):
    """Value and d/d logprobs of the clipped policy-gradient term."""
    b_, t_ = lp.shape
    den = sum(float(mask[b][t]) for b in range(b_) for t in range(t_))
    num = 0.0
    grad = [[0.0] * t_ for _ in range(b_)]
    for b in range(b_):
        for t in range(t_):
            if mask[b][t] == 0:
                continue
            a = float(adv[b][t])
            rho = math.exp(float(lp[b][t]) - float(old[b][t])) * (1.0 if w is None else float(w[b][t]))
            rho_c = min(max(rho, 1 - clip), 1 + clip)
            unclipped, clipped = -a * rho, -a * rho_c
            num += max(unclipped, clipped)
            if unclipped > clipped or rho_c == rho:  # gradient flows through the unclipped branch
                grad[b][t] = -a * rho / den
    return num / den, torch.tensor(grad, dtype=F64)


# ----------------------------------------------------------------------------- fixtures


def rand_logits(seed: int, scale: float = 2.0, shape=(B, T, V), dtype=F64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=F64) * scale).to(dtype)


# ----------------------------------------------------------------------------- divergences


@pytest.mark.parametrize("tau", [1.0, 0.7, 2.0])
@pytest.mark.parametrize("name,kw", CASES)
def test_divergence_value_matches_naive(name, kw, tau):
    s, t = rand_logits(1), rand_logits(2)
    got = token_divergence(name, s, t, temperature=tau, **kw)
    want = n_per_token(lambda sr, tr: n_div(name, sr, tr, tau=tau, **kw), s, t)
    assert got.shape == (B, T)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,kw", [c for c in CASES if c[0] != "akl"])
def test_divergence_gradient_gradcheck(name, kw):
    """Analytic gradient == finite differences of the value (AKL excluded: its weights detach q)."""
    s = rand_logits(3, shape=(1, 2, 5)).requires_grad_(True)
    t = rand_logits(4, shape=(1, 2, 5))
    assert torch.autograd.gradcheck(lambda x: token_divergence(name, x, t, temperature=0.8, **kw), (s,))


@pytest.mark.parametrize("tau", [1.0, 0.5])
@pytest.mark.parametrize("name,kw", [("fkl", {}), ("rkl", {}), ("akl", {"mu": 0.5}), ("akl", {"mu": 0.8})])
def test_divergence_gradient_matches_naive(name, kw, tau):
    s = rand_logits(5).requires_grad_(True)
    t = rand_logits(6)
    token_divergence(name, s, t, temperature=tau, **kw).sum().backward()
    want = torch.tensor(
        [[n_div_grad(name, s[b, i].tolist(), t[b, i].tolist(), tau=tau, **kw) for i in range(T)] for b in range(B)],
        dtype=F64,
    )
    assert torch.allclose(s.grad, want, rtol=1e-9, atol=1e-12), f"expected grad lib={s.grad} naive={want}"


@pytest.mark.parametrize("name", DIVERGENCES)
def test_teacher_never_gets_gradient(name):
    s = rand_logits(7).requires_grad_(True)
    t = rand_logits(8).requires_grad_(True)
    token_divergence(name, s, t).sum().backward()
    assert t.grad is None
    assert s.grad is not None and torch.isfinite(s.grad).all()


def test_unknown_divergence_lists_valid_names():
    with pytest.raises(ValueError) as err:
        token_divergence("kl", rand_logits(1), rand_logits(2))
    for name in DIVERGENCES:
        assert name in str(err.value)


def test_divergence_rejects_shape_mismatch_and_bad_params():
    with pytest.raises(ValueError):
        token_divergence("fkl", rand_logits(1), rand_logits(2, shape=(B, T, V + 1)))
    with pytest.raises(ValueError):
        token_divergence("jsd", rand_logits(1), rand_logits(2), beta=1.5)
    with pytest.raises(ValueError):
        token_divergence("fkl", rand_logits(1), rand_logits(2), temperature=0.0)


@pytest.mark.parametrize("name,kw", CASES)
def test_shared_minus_inf_columns_are_finite_and_exact(name, kw):
    """Both models forbid the same tokens: every divergence stays finite (0·log0 = 0), grads too."""
    s, t = rand_logits(9), rand_logits(10)
    s[..., [0, 3]] = NEG_INF
    t[..., [0, 3]] = NEG_INF
    s.requires_grad_(True)
    val = token_divergence(name, s, t, **kw)
    val.sum().backward()
    want = n_per_token(lambda sr, tr: n_div(name, sr, tr, **kw), s.detach(), t)
    torch.testing.assert_close(val.detach(), want, rtol=1e-10, atol=1e-12)
    assert torch.isfinite(s.grad).all(), f"non-finite grad {s.grad}"


@pytest.mark.parametrize("name,kw", CASES)
def test_teacher_only_minus_inf_gives_no_nan(name, kw):
    """Teacher forbids tokens the student allows: no NaN anywhere; +inf only where KLR is truly
    infinite (rkl, akl's KLR part, jsd's β=1 endpoint); the others stay finite in value and grad."""
    s, t = rand_logits(11), rand_logits(12)
    t[..., [1, 4]] = NEG_INF
    s.requires_grad_(True)
    val = token_divergence(name, s, t, **kw)
    assert not torch.isnan(val).any()
    want = n_per_token(lambda sr, tr: n_div(name, sr, tr, **kw), s.detach(), t)
    torch.testing.assert_close(val.detach(), want, rtol=1e-10, atol=1e-12)
    infinite_klr = name in ("rkl", "akl") or (name == "jsd" and kw["beta"] == 1.0)
    if not infinite_klr:
        val.sum().backward()
        assert torch.isfinite(val).all() and torch.isfinite(s.grad).all()


# ----------------------------------------------------------------------------- masked mean


def test_masked_mean_uses_one_global_count():
    v = rand_logits(13, shape=(B, T))
    got = masked_mean(v, MASK)
    torch.testing.assert_close(got, torch.tensor(n_masked_mean(v, MASK), dtype=F64))
    # with unequal lengths the global mean differs from the mean of per-sequence means
    uneven = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]], dtype=F64)
    per_seq = ((v * uneven).sum(1) / uneven.sum(1)).mean()
    glob = masked_mean(v, uneven)
    torch.testing.assert_close(glob, torch.tensor(n_masked_mean(v, uneven), dtype=F64))
    assert not torch.allclose(glob, per_seq)


def test_masked_mean_ignores_garbage_at_padding_and_empty_mask_is_zero():
    v = rand_logits(14, shape=(B, T))
    dirty = v.clone()
    dirty[MASK == 0] = float("nan")
    dirty[0, 2] = float("inf")
    torch.testing.assert_close(masked_mean(dirty, MASK), masked_mean(v, MASK))
    assert masked_mean(v, torch.zeros_like(MASK)).item() == 0.0
    assert masked_mean(v, MASK.bool()).dtype == F64


# ----------------------------------------------------------------------------- importance weights


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5, 1.0])
def test_importance_weights_match_naive_and_are_detached(alpha):
    lq = torch.log_softmax(rand_logits(15), -1)[..., 0].clone().requires_grad_(True)
    lp = torch.log_softmax(rand_logits(16), -1)[..., 0].clone().requires_grad_(True)
    w = importance_weights(lq, lp, alpha)
    want = torch.tensor(
        [
            [math.exp(a) / (alpha * math.exp(b) + (1 - alpha) * math.exp(a)) for a, b in zip(ra, rb)]
            for ra, rb in zip(lq.tolist(), lp.tolist())
        ],
        dtype=F64,
    )
    torch.testing.assert_close(w, want, rtol=1e-12, atol=1e-14)
    assert not w.requires_grad
    if alpha < 1:
        assert (w > 0).all() and (w <= 1 / (1 - alpha) + 1e-12).all()


# ----------------------------------------------------------------------------- single-step term


@pytest.mark.parametrize("weighted", [False, True])
def test_single_step_loss_matches_naive(weighted):
    s = rand_logits(17).requires_grad_(True)
    t = rand_logits(18).requires_grad_(True)
    w = (torch.rand(B, T, generator=torch.Generator().manual_seed(0), dtype=F64) + 0.5).requires_grad_(True)
    got = single_step_loss(s, t, MASK, w if weighted else None)
    klr = n_per_token(lambda sr, tr: n_div("rkl", sr, tr), s.detach(), t.detach())
    want = n_masked_mean(klr * (w.detach() if weighted else 1.0), MASK)
    assert abs(got.item() - want) < 1e-12
    got.backward()
    assert t.grad is None, "teacher logits must not get a gradient"
    assert w.grad is None, "importance weights must be detached"
    # gradient == masked, weighted naive rkl gradient
    n = MASK.sum().item()
    want_g = torch.zeros(B, T, V, dtype=F64)
    for b in range(B):
        for i in range(T):
            if MASK[b, i]:
                scale = (w[b, i].item() if weighted else 1.0) / n
                want_g[b, i] = torch.tensor(n_div_grad("rkl", s[b, i].tolist(), t[b, i].tolist()), dtype=F64) * scale
    assert torch.allclose(s.grad, want_g, atol=1e-12), f"expected grad lib={s.grad} naive={want_g}"


def test_single_step_loss_ignores_padding_garbage_in_weights():
    s = rand_logits(26).requires_grad_(True)
    t = rand_logits(27)
    w = torch.rand(B, T, generator=torch.Generator().manual_seed(3), dtype=F64) + 0.5
    dirty = w.clone()
    dirty[MASK == 0] = float("nan")
    loss = single_step_loss(s, t, MASK, dirty)
    loss.backward()
    torch.testing.assert_close(loss, single_step_loss(s, t, MASK, w))
    assert torch.isfinite(s.grad).all() and (s.grad[MASK == 0] == 0).all()


# ----------------------------------------------------------------------------- advantages


@pytest.mark.parametrize("whiten", [False, True])
@pytest.mark.parametrize("length_norm", [False, True])
@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("include_current", [True, False])
def test_advantages_match_naive(include_current, gamma, length_norm, whiten):
    r = rand_logits(19, shape=(B, T)).requires_grad_(True)
    got = minillm_advantages(
        r, MASK, gamma=gamma, include_current=include_current, length_norm=length_norm, whiten=whiten
    )
    want = n_advantages(r.detach(), MASK, gamma, include_current, length_norm, whiten)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert not got.requires_grad
    assert (got[MASK == 0] == 0).all()


@pytest.mark.parametrize("include_current", [True, False])
def test_advantages_padding_never_enters_and_whitening_uses_valid_tokens_only(include_current):
    r = rand_logits(20, shape=(B, T))
    dirty = r.clone()
    dirty[MASK == 0] = 1e6
    dirty[0, 2] = float("nan")
    kw = dict(gamma=0.9, include_current=include_current)
    torch.testing.assert_close(minillm_advantages(dirty, MASK, **kw), minillm_advantages(r, MASK, **kw))
    a = minillm_advantages(r, MASK, **kw)
    valid = a[MASK != 0]
    assert abs(valid.mean().item()) < 1e-10
    # unbiased std over valid tokens is 1 (up to the 1e-8 in the denominator)
    assert abs(valid.std(unbiased=True).item() - 1.0) < 1e-6
    # pooling padding in (the LMOps bug) would give something else
    g = minillm_advantages(r, MASK, whiten=False, **kw)
    pooled = (g - g.mean()) / torch.sqrt(g.var() + 1e-8)
    assert not torch.allclose(pooled[MASK != 0], valid)


def test_advantages_discount_is_relative_to_s_not_absolute():
    """A sequence shifted right by two padding positions gets the same returns."""
    r = torch.tensor([[1.0, 2.0, 3.0, 0.0, 0.0]], dtype=F64)
    m = torch.tensor([[1, 1, 1, 0, 0]], dtype=F64)
    r2 = torch.tensor([[0.0, 0.0, 1.0, 2.0, 3.0]], dtype=F64)
    m2 = torch.tensor([[0, 0, 1, 1, 1]], dtype=F64)
    kw = dict(gamma=0.5, include_current=True, length_norm=False, whiten=False)
    a, a2 = minillm_advantages(r, m, **kw), minillm_advantages(r2, m2, **kw)
    torch.testing.assert_close(a[0, :3], a2[0, 2:])
    torch.testing.assert_close(a[0, :3], torch.tensor([1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0], dtype=F64))


# ----------------------------------------------------------------------------- long-term term


def long_term_inputs():
    g = torch.Generator().manual_seed(21)
    old = torch.log_softmax(torch.randn(B, T, V, generator=g, dtype=F64), -1)[..., 0]
    lp = old + torch.randn(B, T, generator=g, dtype=F64) * 0.4
    adv = torch.randn(B, T, generator=g, dtype=F64)
    w = torch.rand(B, T, generator=g, dtype=F64) * 0.6 + 0.7
    # make sure clipping is active on both sides: A>0 with ρ>1+ε and A<0 with ρ<1−ε
    lp[0, 0], adv[0, 0], w[0, 0] = old[0, 0] + 0.5, 1.0, 1.0
    lp[1, 1], adv[1, 1], w[1, 1] = old[1, 1] - 0.5, -1.0, 1.0
    # and inactive (unclipped branch) on both sides: A<0 with ρ>1+ε, A>0 with ρ<1−ε
    lp[0, 1], adv[0, 1], w[0, 1] = old[0, 1] + 0.5, -1.0, 1.0
    lp[1, 0], adv[1, 0], w[1, 0] = old[1, 0] - 0.5, 1.0, 1.0
    return lp, old, adv, w


@pytest.mark.parametrize("use_weights", [False, True])
def test_long_term_loss_matches_naive_with_clipping_both_sides(use_weights):
    lp, old, adv, w = long_term_inputs()
    lp = lp.clone().requires_grad_(True)
    old_r, adv_r, w_r = (x.clone().requires_grad_(True) for x in (old, adv, w))
    got = long_term_loss(lp, old_r, adv_r, MASK, weights=w_r if use_weights else None, clip=0.2)
    want, want_g = n_long_term(lp.detach(), old, adv, MASK, w if use_weights else None, 0.2)
    assert abs(got.item() - want) < 1e-12
    got.backward()
    assert torch.allclose(lp.grad, want_g, atol=1e-12), f"expected grad lib={lp.grad} naive={want_g}"
    # clipped tokens get exactly zero gradient, unclipped ones don't
    assert lp.grad[0, 0] == 0 and lp.grad[1, 1] == 0
    assert lp.grad[0, 1] != 0 and lp.grad[1, 0] != 0
    assert old_r.grad is None and adv_r.grad is None and w_r.grad is None


def test_long_term_loss_weights_enter_rho():
    lp, old, adv, w = long_term_inputs()
    a = long_term_loss(lp, old, adv, MASK, weights=w)
    b = long_term_loss(lp, old, adv, MASK)
    assert not torch.allclose(a, b)


def test_long_term_loss_ignores_padding_garbage():
    lp, old, adv, w = long_term_inputs()
    old2, adv2 = old.clone(), adv.clone()
    old2[MASK == 0] = NEG_INF
    adv2[MASK == 0] = float("nan")
    lp = lp.clone().requires_grad_(True)
    loss = long_term_loss(lp, old2, adv2, MASK, weights=w)
    loss.backward()
    torch.testing.assert_close(loss, long_term_loss(lp, old, adv, MASK, weights=w))
    assert torch.isfinite(lp.grad).all() and (lp.grad[MASK == 0] == 0).all()


@pytest.mark.parametrize("use_weights", [False, True])
def test_clip_fraction_matches_naive(use_weights):
    lp, old, adv, w = long_term_inputs()
    got = clip_fraction(lp, old, w if use_weights else None, MASK, 0.2)
    n, k = 0, 0
    for b in range(B):
        for t in range(T):
            if MASK[b, t]:
                rho = math.exp(lp[b, t].item() - old[b, t].item()) * (w[b, t].item() if use_weights else 1.0)
                n += 1
                k += int(rho < 0.8 or rho > 1.2)
    assert 0 < k < n
    assert abs(got.item() - k / n) < 1e-12


# ----------------------------------------------------------------------------- helpers


@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_token_logprobs_cross_entropy_entropy_match_naive(tau):
    logits = rand_logits(22)
    logits[0, 1, 2] = NEG_INF
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))
    tokens[0, 1] = 2  # a token with probability 0: log-prob -inf, not NaN
    lp = token_logprobs(logits, tokens, temperature=tau)
    want = torch.tensor(
        [[n_log(n_softmax(logits[b, t].tolist(), tau)[tokens[b, t]]) for t in range(T)] for b in range(B)],
        dtype=F64,
    )
    torch.testing.assert_close(lp, want)
    ce = cross_entropy(rand_logits(23), tokens, MASK)
    want_ce = n_masked_mean(
        torch.tensor(
            [[-math.log(n_softmax(rand_logits(23)[b, t].tolist())[tokens[b, t]]) for t in range(T)] for b in range(B)],
            dtype=F64,
        ),
        MASK,
    )
    assert abs(ce.item() - want_ce) < 1e-12
    ent = entropy(logits)
    want_ent = n_per_token(lambda row: -sum(q * math.log(q) for q in n_softmax(row) if q > 0), logits)
    torch.testing.assert_close(ent, want_ent)


# ----------------------------------------------------------------------------- dtype and device


def _all_outputs(device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    s, t = rand_logits(24).to(device, dtype), rand_logits(25).to(device, dtype)
    mask = MASK.to(device, dtype)
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(2)).to(device)
    lq, lp = token_logprobs(s, tokens), token_logprobs(t, tokens)
    w = importance_weights(lq, lp, 0.2)
    adv = minillm_advantages(lp - lq, mask, gamma=0.9)
    out = {f"div_{n}": token_divergence(n, s, t, temperature=0.9) for n in DIVERGENCES}
    out.update(
        masked=masked_mean(lq, mask),
        w=w,
        single=single_step_loss(s, t, mask, w),
        adv=adv,
        long=long_term_loss(lq + 0.1, lq, adv, mask, weights=w),
        ce=cross_entropy(s, tokens, mask),
        ent=entropy(s),
        clipfrac=clip_fraction(lq + 0.3, lq, w, mask, 0.2),
    )
    for k, v in out.items():
        assert v.dtype == dtype and v.device.type == torch.device(device).type, k
    return out


@pytest.mark.parametrize("device", DEVICES)
def test_float32_agrees_with_float64(device):
    lo, hi = _all_outputs(device, torch.float32), _all_outputs("cpu", F64)
    for k in hi:
        torch.testing.assert_close(lo[k].cpu().double(), hi[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("device", DEVICES)
def test_float64_on_device_matches_cpu(device):
    a, b = _all_outputs(device, F64), _all_outputs("cpu", F64)
    for k in b:
        torch.testing.assert_close(a[k].cpu(), b[k], rtol=1e-10, atol=1e-12, msg=lambda m: f"{k}: {m}")
