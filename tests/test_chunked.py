"""Chunked divergences == the naive `token_divergence` path, in values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minillm_dash.chunked import chunked_divergence_from_logits, chunked_token_divergence
from minillm_dash.losses import masked_mean, token_divergence

F64 = torch.float64
B, T, HS, HT, V = 2, 7, 8, 6, 11  # student and teacher hidden sizes differ on purpose
MASK = torch.tensor([[1, 1, 0, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0, 0]], dtype=F64)
CASES = [
    ("fkl", {}),
    ("rkl", {}),
    ("jsd", {"beta": 0.3}),
    ("tvd", {}),
    ("skl", {"alpha": 0.2}),
    ("srkl", {"alpha": 0.2}),
    ("akl", {"mu": 0.6}),
    ("rkl", {"temperature": 0.7}),
]
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA unavailable")
    ),
]


def make_inputs(seed: int, bias: bool, dtype=F64, device="cpu"):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=F64) * scale).to(device, dtype)

    s_h, s_w = rnd(B, T, HS).requires_grad_(True), rnd(V, HS, scale=0.7).requires_grad_(True)
    t_h, t_w = rnd(B, T, HT).requires_grad_(True), rnd(V, HT, scale=0.7).requires_grad_(True)
    s_b = rnd(V).requires_grad_(True) if bias else None
    t_b = rnd(V).requires_grad_(True) if bias else None
    return s_h, s_w, s_b, t_h, t_w, t_b


def grads_of(loss, tensors):
    return torch.autograd.grad(loss, [x for x in tensors if x is not None], retain_graph=True)


@pytest.mark.parametrize("bias,chunk", [(False, 1), (True, 3), (True, 64)])
@pytest.mark.parametrize("name,kw", CASES)
def test_chunked_hidden_matches_naive(name, kw, bias, chunk):
    s_h, s_w, s_b, t_h, t_w, t_b = make_inputs(0, bias)
    naive = token_divergence(name, F.linear(s_h, s_w, s_b), F.linear(t_h, t_w, t_b), **kw)
    chunked = chunked_token_divergence(
        name, s_h, s_w, t_h, t_w, student_bias=s_b, teacher_bias=t_b, chunk_tokens=chunk, **kw
    )
    assert chunked.shape == (B, T)
    torch.testing.assert_close(chunked, naive, rtol=1e-9, atol=1e-12)
    student = (s_h, s_w, s_b)
    g_naive = grads_of(masked_mean(naive, MASK), student)
    g_chunk = grads_of(masked_mean(chunked, MASK), student)
    for a, b in zip(g_chunk, g_naive):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-10), f"expected grad chunked={a} naive={b}"
    # the teacher's tensors are never part of the graph
    assert not any(x.grad_fn is not None for x in (t_h, t_w) if x is not None)
    masked_mean(chunked, MASK).backward()
    assert t_h.grad is None and t_w.grad is None and (t_b is None or t_b.grad is None)


@pytest.mark.parametrize("chunk", [4, 100])
@pytest.mark.parametrize("name,kw", CASES)
def test_chunked_from_logits_matches_naive(name, kw, chunk):
    g = torch.Generator().manual_seed(1)
    s = (torch.randn(B, T, V, generator=g, dtype=F64) * 2).requires_grad_(True)
    t = (torch.randn(B, T, V, generator=g, dtype=F64) * 2).requires_grad_(True)
    naive = token_divergence(name, s, t, **kw)
    chunked = chunked_divergence_from_logits(name, s, t, chunk_tokens=chunk, **kw)
    torch.testing.assert_close(chunked, naive, rtol=1e-9, atol=1e-12)
    (g_naive,) = torch.autograd.grad(masked_mean(naive, MASK), s)
    (g_chunk,) = torch.autograd.grad(masked_mean(chunked, MASK), s, retain_graph=True)
    assert torch.allclose(g_chunk, g_naive, rtol=1e-7, atol=1e-10), f"expected grad chunked={g_chunk} naive={g_naive}"
    masked_mean(chunked, MASK).backward()
    assert t.grad is None


def _new_saved_numel(fn, inputs) -> int:
    """Elements of *newly allocated* storage autograd keeps for backward while `fn` runs.

    Saved views of the inputs (which exist anyway) are not counted; each storage counts once.
    """
    existing = {x.untyped_storage().data_ptr() for x in inputs if x is not None}
    seen: dict[int, int] = {}

    def pack(x):
        ptr = x.untyped_storage().data_ptr()
        if ptr not in existing:
            seen[ptr] = x.untyped_storage().nbytes() // x.element_size()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        fn()
    return sum(seen.values())


def test_chunked_keeps_no_new_tensor_for_backward():
    """The reason the module exists: the naive graph keeps several new [B,T,V] tensors for the
    backward pass; the chunked one keeps nothing but references to its inputs (checkpointing)."""
    inputs = make_inputs(2, True)
    s_h, s_w, s_b, t_h, t_w, t_b = inputs
    btv = B * T * V
    naive = _new_saved_numel(
        lambda: token_divergence("rkl", F.linear(s_h, s_w, s_b), F.linear(t_h, t_w, t_b)), inputs
    )
    chunked = _new_saved_numel(
        lambda: chunked_token_divergence(
            "rkl", s_h, s_w, t_h, t_w, student_bias=s_b, teacher_bias=t_b, chunk_tokens=4
        ),
        inputs,
    )
    assert naive >= 2 * btv, naive
    assert chunked == 0, chunked


@pytest.mark.parametrize("device", DEVICES)
def test_chunked_float32_and_device(device):
    lo = make_inputs(3, True, dtype=torch.float32, device=device)
    hi = make_inputs(3, True)
    a = chunked_token_divergence("jsd", lo[0], lo[1], lo[3], lo[4], student_bias=lo[2], teacher_bias=lo[5], chunk_tokens=5)
    b = chunked_token_divergence("jsd", hi[0], hi[1], hi[3], hi[4], student_bias=hi[2], teacher_bias=hi[5], chunk_tokens=5)
    assert a.dtype == torch.float32 and a.device.type == torch.device(device).type
    torch.testing.assert_close(a.detach().cpu().double(), b.detach(), rtol=1e-4, atol=1e-6)


def test_no_grad_mode_and_validation():
    s_h, s_w, s_b, t_h, t_w, t_b = make_inputs(4, False)
    with torch.no_grad():
        out = chunked_token_divergence("fkl", s_h, s_w, t_h, t_w, chunk_tokens=5)
    assert not out.requires_grad
    torch.testing.assert_close(out, token_divergence("fkl", F.linear(s_h, s_w), F.linear(t_h, t_w)).detach())
    with pytest.raises(ValueError, match="valid names"):
        chunked_token_divergence("nope", s_h, s_w, t_h, t_w)
    with pytest.raises(ValueError, match="vocabular"):
        chunked_token_divergence("fkl", s_h, s_w, t_h, t_w[:-1])
    with pytest.raises(ValueError, match="chunk_tokens"):
        chunked_token_divergence("fkl", s_h, s_w, t_h, t_w, chunk_tokens=0)
