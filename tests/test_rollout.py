"""Rollout: reproducible cached sampling, EOS/masks, left padding, mixed sampling vs a no-cache reference."""

from __future__ import annotations

import pytest
import torch

from minillm_dash import rollout
from minillm_dash.tiny import tiny_pair

ALPHA = 0.2


@pytest.fixture(scope="module")
def pair():
    teacher, student, tok = tiny_pair(teacher_seed=0, student_seed=1)
    teacher.requires_grad_(False)
    return teacher, student, tok


def _prompts(tok, texts=("hello there", "a", "what is up?")):
    enc = tok(list(texts), padding=True, return_tensors="pt")
    assert tok.padding_side == "left"
    return enc.input_ids, enc.attention_mask


def _sample(pair, source, seed=0, max_new_tokens=24, eos=None, **kw):
    teacher, student, tok = pair
    ids, mask = kw.pop("prompts", None) or _prompts(tok)
    alpha = kw.pop("mix_alpha", ALPHA)
    return rollout.sample_responses(
        student, teacher, ids, mask, source=source, max_new_tokens=max_new_tokens, mix_alpha=alpha,
        eos_token_id=tok.eos_token_id if eos is None else eos, pad_token_id=tok.pad_token_id,
        generator=torch.Generator().manual_seed(seed), **kw)


def _token_logprobs(model, batch):
    logits = rollout.response_logits(model, batch).float()
    return torch.log_softmax(logits, -1).gather(2, batch.response_ids[..., None])[..., 0]


@pytest.mark.parametrize("source", ["student", "teacher", "mixed"])
def test_seeded_sampling_is_reproducible(pair, source):
    a, b = _sample(pair, source, seed=3), _sample(pair, source, seed=3)
    assert torch.equal(a.response_ids, b.response_ids)
    assert torch.equal(a.response_mask, b.response_mask)
    c = _sample(pair, source, seed=4)
    assert not torch.equal(a.response_ids, c.response_ids)
    assert a.source == source and a.timings["sampling"] > 0


def test_shapes_and_fields(pair):
    b = _sample(pair, "mixed")
    B, T = b.response_ids.shape
    assert b.input_ids.shape == (B, b.prompt_len + T) == b.attention_mask.shape
    assert torch.equal(b.input_ids[:, b.prompt_len:], b.response_ids)
    assert torch.equal(b.attention_mask[:, b.prompt_len:], b.response_mask.long())
    assert b.response_mask.dtype == torch.float32
    for t in (b.old_logprobs, b.teacher_logprobs, b.weights):
        assert t.shape == (B, T) and not t.requires_grad
    s = _sample(pair, "student")
    assert torch.equal(s.weights, torch.ones_like(s.weights))
    t = _sample(pair, "teacher")
    assert t.old_logprobs is None and t.weights is None and t.teacher_logprobs is not None


def test_eos_ends_sequences_and_masks(pair):
    _, _, tok = pair
    # A frequent token stands in for EOS so that every row ends early.
    probe = _sample(pair, "student", max_new_tokens=32)
    eos = int(torch.mode(probe.response_ids[probe.response_mask.bool()]).values)
    b = _sample(pair, "student", max_new_tokens=200, eos=eos)
    for row_ids, row_mask in zip(b.response_ids, b.response_mask):
        hits = (row_ids == eos).nonzero()
        if len(hits) == 0:
            assert row_mask.all()
            continue
        end = int(hits[0])
        assert row_mask[: end + 1].all()  # the EOS itself is a real, counted token
        assert not row_mask[end + 1:].any()
        assert (row_ids[end + 1:] == tok.pad_token_id).all()
    assert b.response_ids.shape[1] < 200  # stopped early once every row had ended
    assert (b.response_ids == eos).any(dim=1).all()
    assert (b.old_logprobs[b.response_mask == 0] == 0).all()


def test_left_padding_gives_the_same_logprobs_as_alone(pair):
    teacher, student, tok = pair
    ids, mask = _prompts(tok, ("a much longer prompt here", "hi"))
    batch = _sample(pair, "mixed", prompts=(ids, mask), max_new_tokens=12)
    # Re-score row 1 (heavily left padded) on its own, without any padding.
    real = mask[1].bool()
    alone = rollout.reference_batch(ids[1:2, real], mask[1:2, real], batch.response_ids[1:2], batch.response_mask[1:2])
    m = batch.response_mask[1].bool()
    for model, stored in ((student, batch.old_logprobs), (teacher, batch.teacher_logprobs)):
        with torch.no_grad():
            lp_alone = _token_logprobs(model, alone)[0]
            lp_padded = _token_logprobs(model, batch)[1]
        torch.testing.assert_close(lp_alone[m], stored[1][m], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(lp_padded[m], lp_alone[m], atol=1e-4, rtol=1e-4)


def _reference_mixed_sampling(student, teacher, ids, mask, steps, eos, pad, generator):
    """No cache: full forward of both models on the whole sequence for every new token."""
    seq, seq_mask = ids.clone(), mask.clone()
    finished = torch.zeros(ids.shape[0], dtype=torch.bool)
    out_ids, lqs, lps, masks = [], [], [], []
    for _ in range(steps):
        pos = (seq_mask.cumsum(-1) - 1).clamp(min=0)
        lq = torch.log_softmax(student(input_ids=seq, attention_mask=seq_mask, position_ids=pos).logits[:, -1].float(), -1)
        lp = torch.log_softmax(teacher(input_ids=seq, attention_mask=seq_mask, position_ids=pos).logits[:, -1].float(), -1)
        probs = ALPHA * lp.exp() + (1 - ALPHA) * lq.exp()
        tok = torch.multinomial(probs, 1, generator=generator)[:, 0]
        alive = ~finished
        tok = torch.where(alive, tok, torch.full_like(tok, pad))
        out_ids.append(tok)
        masks.append(alive)
        lqs.append(torch.where(alive, lq.gather(1, tok[:, None])[:, 0], 0.0))
        lps.append(torch.where(alive, lp.gather(1, tok[:, None])[:, 0], 0.0))
        finished |= alive & (tok == eos)
        seq = torch.cat([seq, tok[:, None]], 1)
        seq_mask = torch.cat([seq_mask, torch.ones_like(seq_mask[:, :1])], 1)
        if finished.all():
            break
    return torch.stack(out_ids, 1), torch.stack(masks, 1), torch.stack(lqs, 1), torch.stack(lps, 1)


def test_cached_mixed_sampling_matches_no_cache_reference(pair):
    teacher, student, tok = pair
    ids, mask = _prompts(tok)
    cached = _sample(pair, "mixed", seed=11, max_new_tokens=16, prompts=(ids, mask))
    with torch.no_grad():
        ref_ids, ref_mask, ref_lq, ref_lp = _reference_mixed_sampling(
            student.eval(), teacher, ids, mask, cached.response_ids.shape[1], tok.eos_token_id, tok.pad_token_id,
            torch.Generator().manual_seed(11))
    assert torch.equal(cached.response_ids, ref_ids)
    assert torch.equal(cached.response_mask.bool(), ref_mask)
    torch.testing.assert_close(cached.old_logprobs, ref_lq, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cached.teacher_logprobs, ref_lp, atol=1e-4, rtol=1e-4)
    ref_w = ref_lq.exp() / (ALPHA * ref_lp.exp() + (1 - ALPHA) * ref_lq.exp())
    m = ref_mask
    torch.testing.assert_close(cached.weights[m], ref_w[m], atol=1e-4, rtol=1e-4)


def test_importance_weights_are_bounded(pair):
    b = _sample(pair, "mixed", max_new_tokens=40)
    w = b.weights[b.response_mask.bool()]
    assert (w > 0).all() and (w <= 1 / (1 - ALPHA) + 1e-6).all()
    assert w.min() < 0.9  # the teacher sometimes proposes tokens the student finds unlikely


@pytest.mark.parametrize("source", ["student", "mixed"])
def test_old_logprobs_equal_teacher_forced_recomputation(pair, source):
    teacher, student, tok = pair
    student.train()
    b = _sample(pair, source, max_new_tokens=20)
    assert student.training  # restored after sampling
    m = b.response_mask.bool()
    with torch.no_grad():
        student.eval()
        lq = _token_logprobs(student, b)
        student.train()
        lp = _token_logprobs(teacher, b)
    torch.testing.assert_close(b.old_logprobs[m], lq[m], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b.teacher_logprobs[m], lp[m], atol=1e-4, rtol=1e-4)


def test_stepped_teacher_scoring_equals_after(pair):
    after = _sample(pair, "student", seed=5, max_new_tokens=16)
    stepped = _sample(pair, "student", seed=5, max_new_tokens=16, teacher_scoring="stepped")
    assert torch.equal(after.response_ids, stepped.response_ids)
    m = after.response_mask.bool()
    torch.testing.assert_close(after.teacher_logprobs[m], stepped.teacher_logprobs[m], atol=1e-4, rtol=1e-4)


def test_response_logits_alignment(pair):
    teacher, _, tok = pair
    ids, mask = _prompts(tok)
    ref = tok(["xyz<|im_end|>", "ab<|im_end|>", "q<|im_end|>"], padding="longest", padding_side="right",
              return_tensors="pt")
    batch = rollout.reference_batch(ids, mask, ref.input_ids, ref.attention_mask)
    assert batch.source == "reference" and batch.old_logprobs is None
    with torch.no_grad():
        logits = rollout.response_logits(teacher, batch)
        full = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=rollout.position_ids_from_mask(batch.attention_mask)).logits
    B, T = ref.input_ids.shape
    assert logits.shape == (B, T, teacher.config.vocab_size)
    assert torch.isfinite(logits).all()
    P = ids.shape[1]
    for t in range(T):  # position t is predicted from everything up to prompt + y_<t
        torch.testing.assert_close(logits[:, t], full[:, P - 1 + t], atol=1e-5, rtol=1e-5)


def test_response_logits_carry_gradients(pair):
    _, student, tok = pair
    b = _sample(pair, "student", max_new_tokens=6)
    logits = rollout.response_logits(student, b)
    assert logits.requires_grad
    logits.float().logsumexp(-1).sum().backward()
    assert student.model.embed_tokens.weight.grad is not None
    student.zero_grad(set_to_none=True)


def test_greedy_generate_matches_hf_generate(pair):
    teacher, _, tok = pair
    ids, mask = _prompts(tok, ("hello", "hello"))
    out, out_mask = rollout.greedy_generate(teacher, ids, mask, 12, eos_token_id=tok.eos_token_id,
                                            pad_token_id=tok.pad_token_id)
    hf = teacher.generate(input_ids=ids[:1], attention_mask=mask[:1], max_new_tokens=12, do_sample=False,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)[0, ids.shape[1]:]
    n = len(hf)
    assert torch.equal(out[0, :n], hf)
    assert torch.equal(out[0], out[1]) and out_mask.dtype == torch.long


def test_invalid_arguments(pair):
    with pytest.raises(ValueError, match="source"):
        _sample(pair, "reference")
    with pytest.raises(ValueError, match="mix_alpha"):
        _sample(pair, "mixed", mix_alpha=1.0)
