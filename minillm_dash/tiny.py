"""Tiny random-initialised llama models and a character-level tokenizer, built in code.

Tests, benchmarks and browser tests all over the project need a teacher/student pair that loads in
milliseconds without network or disk. The tokenizer is character-level (printable ASCII plus a few
special tokens), so any ASCII text round-trips exactly through encode/decode; the chat template
mirrors SmolLM2's `<|im_start|>role ... <|im_end|>` layout and the end-of-turn token is EOS.
Everything is deterministic: the same seed gives bit-identical weights, and building a model never
touches the caller's global RNG state.
"""

from __future__ import annotations

import string

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "<|im_end|>", "<unk>"
IM_START = "<|im_start|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK, IM_START)
# Printable ASCII without the vertical tab / form feed; newline and tab are real characters here.
CHARACTERS: tuple[str, ...] = tuple(dict.fromkeys(string.printable.replace("\x0b", "").replace("\x0c", "")))

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TEACHER_LAYERS = 4
STUDENT_LAYERS = 2


def tiny_vocab() -> dict[str, int]:
    """Token -> id: the special tokens first (pad = 0), then one id per character."""
    tokens = list(SPECIAL_TOKENS) + [c for c in CHARACTERS if c not in SPECIAL_TOKENS]
    return {tok: i for i, tok in enumerate(tokens)}


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh character-level fast tokenizer with pad/bos/eos/unk and a chat template (no network)."""
    vocab = tiny_vocab()
    # BPE without merges and without a pre-tokenizer splits text into single characters.
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        model_max_length=4096,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_config(
    tokenizer: PreTrainedTokenizerFast | None = None,
    num_layers: int = TEACHER_LAYERS,
    hidden_size: int = 64,
) -> LlamaConfig:
    """A llama config small enough for sub-second tests; vocabulary taken from the tokenizer."""
    tok = tokenizer if tokenizer is not None else tiny_tokenizer()
    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        # A larger init than the usual 0.02 gives peaked, seed-dependent distributions, so teacher and
        # student differ visibly and divergences are far from zero at step 0.
        initializer_range=0.2,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        attention_dropout=0.0,
    )


def tiny_model(
    seed: int = 0,
    num_layers: int = TEACHER_LAYERS,
    tokenizer: PreTrainedTokenizerFast | None = None,
    hidden_size: int = 64,
) -> LlamaForCausalLM:
    """A random-initialised float32 LlamaForCausalLM on CPU, identical for identical arguments."""
    config = tiny_config(tokenizer, num_layers=num_layers, hidden_size=hidden_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    return model.float().eval()


def tiny_pair(
    teacher_seed: int = 0, student_seed: int = 1
) -> tuple[LlamaForCausalLM, LlamaForCausalLM, PreTrainedTokenizerFast]:
    """(teacher with 4 layers, student with 2 layers, shared tokenizer): the usual test fixture."""
    tok = tiny_tokenizer()
    teacher = tiny_model(teacher_seed, TEACHER_LAYERS, tok)
    student = tiny_model(student_seed, STUDENT_LAYERS, tok)
    return teacher, student, tok
