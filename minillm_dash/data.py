"""Prompt datasets: read and validate uploads, the built-in set, chat formatting, splits, tokenising.

Readers for each file format live in `data_formats`; this module is the public API (see
docs/architecture.md and docs/datasets.md). Every user-fixable problem is a `DatasetError` that
names the file, the 1-based line and the field.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from .data_formats import (
    EXTENSIONS, ParsedRow, check_magic, choose_shape, decode_text, format_for, parse_row, read_csv, read_json,
    read_jsonl, read_parquet, read_text_lines, union_fields,
)
from .errors import ConfigError, DatasetError

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
"""Uploads larger than this (50 MB) are refused before they are read."""
MAX_PROMPT_CHARS = 8000
"""Prompts longer than this are accepted with a warning; `encode_prompts` truncates by tokens."""


@dataclass(frozen=True)
class PromptRecord:
    """One prompt: plain text or chat turns, an optional reference answer, and where it came from."""

    prompt: str | None                 # plain prompt text, or None when `messages` is used
    messages: tuple[dict, ...] | None  # chat turns [{"role","content"}...] ending with a user turn
    reference: str | None              # reference response, if the dataset has one
    source_line: int                   # 1-based line (CSV: header is line 1; Parquet: row number)


@dataclass(frozen=True)
class PromptDataset:
    """A validated dataset; `content_hash` lets the database store one copy per distinct upload."""

    name: str
    records: tuple[PromptRecord, ...]
    detected_format: str      # e.g. "jsonl:prompt/response", "csv:alpaca", "text"
    fields: tuple[str, ...]   # columns/keys found in the file
    content_hash: str         # sha256 hex of the raw bytes
    warnings: tuple[str, ...] = ()

    @property
    def has_references(self) -> bool:
        """True only when every record has a reference (reference-based training needs them all)."""
        return bool(self.records) and all(r.reference is not None for r in self.records)

    def __len__(self) -> int:
        return len(self.records)


# ---------------------------------------------------------------- loading

def load_dataset_file(path: str | os.PathLike, *, name: str | None = None,
                      max_bytes: int = DEFAULT_MAX_BYTES) -> PromptDataset:
    """Read a dataset from disk; the size is checked before anything is read.

    `name` (e.g. the original upload name) is what errors show and what the format is detected
    from; it defaults to the file's own name.
    """
    p = Path(path)
    name = name or p.name
    try:
        if p.is_dir():
            raise DatasetError("this is a folder, not a dataset file", file=name)
        _check_size(p.stat().st_size, max_bytes, name)
        data = p.read_bytes()
    except FileNotFoundError as e:
        raise DatasetError("file not found", file=name) from e
    except OSError as e:
        raise DatasetError(f"cannot read the file: {e.strerror or e}", file=name) from e
    return _load(data, name, format_for(name) or format_for(p.name), max_bytes)


def load_dataset_bytes(data: bytes, name: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> PromptDataset:
    """Read a dataset from memory (an upload); `name`'s extension selects the format."""
    return _load(bytes(data), name, format_for(name), max_bytes)


def _check_size(size: int, max_bytes: int, name: str) -> None:
    if size > max_bytes:
        mb = 1024 * 1024
        raise DatasetError(f"the file is {size:,} bytes ({size / mb:.1f} MB), larger than the "
                           f"{max_bytes / mb:g} MB limit", file=name)


def _load(data: bytes, name: str, fmt: str | None, max_bytes: int) -> PromptDataset:
    _check_size(len(data), max_bytes, name)
    if fmt is None:
        ext = Path(name).suffix or "(none)"
        raise DatasetError(f"unsupported file type {ext}; accepted: {', '.join(EXTENSIONS)}", file=name)
    if not data.strip():
        raise DatasetError("the file is empty", file=name)
    check_magic(data, fmt, name)
    parsed, fields, shape_name = _read(data, fmt, name)
    records = tuple(PromptRecord(r.prompt, r.messages, r.reference, r.line) for r in parsed)
    return PromptDataset(
        name=name, records=records,
        detected_format=fmt if shape_name is None else f"{fmt}:{shape_name}",
        fields=tuple(fields), content_hash=hashlib.sha256(data).hexdigest(),
        warnings=_warnings(records))


def _read(data: bytes, fmt: str, name: str) -> tuple[list[ParsedRow], list[str], str | None]:
    """Format reader -> validated rows, the fields found, and the row shape's name."""
    if fmt == "parquet":
        rows, fields, shape = read_parquet(data, name)
    else:
        text = decode_text(data, name)
        if not text.strip():
            raise DatasetError("the file is empty", file=name)
        if fmt == "text":
            return read_text_lines(text), ["text"], None
        if fmt in ("csv", "tsv"):
            rows, fields = read_csv(text, name, "," if fmt == "csv" else "\t")
        else:
            rows = read_jsonl(text, name) if fmt == "jsonl" else read_json(text, name)
            fields = union_fields(rows)
        if rows:
            shape = choose_shape(fields, name, line=1 if fmt in ("csv", "tsv") else rows[0][1])
    if not rows:
        raise DatasetError("no rows found: the file has no usable prompts", file=name)
    return [parse_row(row, line, shape, name) for row, line in rows], fields, shape.name


def _prompt_key(r: PromptRecord) -> Any:
    return r.prompt if r.messages is None else tuple((m["role"], m["content"]) for m in r.messages)


def _prompt_chars(r: PromptRecord) -> int:
    return len(r.prompt) if r.messages is None else sum(len(m["content"]) for m in r.messages)


def _warnings(records: Sequence[PromptRecord]) -> tuple[str, ...]:
    """Things worth knowing that do not stop the dataset from being used."""
    out = []
    long = [r.source_line for r in records if _prompt_chars(r) > MAX_PROMPT_CHARS]
    if long:
        out.append(f"{len(long)} prompt(s) longer than {MAX_PROMPT_CHARS:,} characters (first at line {long[0]}); "
                   f"each keeps only its last max_prompt_tokens tokens when tokenised")
    missing = [r.source_line for r in records if r.reference is None]
    if 0 < len(missing) < len(records):
        out.append(f"{len(missing)} of {len(records)} rows have no reference (first at line {missing[0]}); "
                   f"the dataset counts as having no references")
    seen: set = set()
    dups = [r.source_line for r in records if _prompt_key(r) in seen or seen.add(_prompt_key(r))]
    if dups:
        out.append(f"{len(dups)} duplicate prompt(s) (first at line {dups[0]})")
    return tuple(out)


@lru_cache(maxsize=1)
def builtin_dataset() -> PromptDataset:
    """~100 short instructions with reference answers shipped with the package (same validation)."""
    data = resources.files("minillm_dash").joinpath("builtin_prompts.jsonl").read_bytes()
    return _load(data, "builtin", "jsonl", DEFAULT_MAX_BYTES)


# ---------------------------------------------------------------- database rows

def to_rows(ds: PromptDataset) -> list[dict]:
    """JSON-serialisable rows for the database (one dict per record)."""
    return [{"prompt": r.prompt, "messages": None if r.messages is None else [dict(m) for m in r.messages],
             "reference": r.reference, "source_line": r.source_line} for r in ds.records]


def from_rows(rows: Sequence[dict], name: str, detected_format: str, fields: Sequence[str],
              content_hash: str, warnings: Sequence[str] = ()) -> PromptDataset:
    """Rebuild a dataset stored with `to_rows` (no re-validation: it was validated on upload)."""
    records = tuple(PromptRecord(
        prompt=r.get("prompt"),
        messages=None if r.get("messages") is None else tuple(dict(m) for m in r["messages"]),
        reference=r.get("reference"), source_line=int(r["source_line"])) for r in rows)
    return PromptDataset(name, records, detected_format, tuple(fields), content_hash, tuple(warnings))


# ---------------------------------------------------------------- prompts and tokens

def record_messages(record: PromptRecord) -> list[dict]:
    """Chat turns for a record: its own, or the plain prompt as one user turn."""
    if record.messages is not None:
        return [dict(m) for m in record.messages]
    return [{"role": "user", "content": record.prompt}]


def format_prompt(tokenizer: Any, record: PromptRecord) -> str:
    """The text a model is prompted with: the chat template (with generation prompt) when the
    tokenizer has one, else the plain prompt, or "role: content" lines for chat rows."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(record_messages(record), tokenize=False, add_generation_prompt=True)
    if record.messages is None:
        return record.prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in record.messages)


def split_train_heldout(records: Sequence[PromptRecord], heldout_size: int,
                        seed: int) -> tuple[list[PromptRecord], list[PromptRecord]]:
    """Deterministic split: the same seed gives the same held-out set; both keep file order.

    The held-out set for size k is contained in the one for size k+1 (a prefix of one permutation).
    """
    n = len(records)
    if heldout_size < 0:
        raise ConfigError(f"must be 0 or more, got {heldout_size}", field="heldout_size")
    if heldout_size >= n:
        raise ConfigError(f"{heldout_size} held-out prompts leave no training prompts: the dataset has "
                          f"{n}; use at most {max(n - 1, 0)}", field="heldout_size")
    order = list(range(n))
    random.Random(f"split:{seed}").shuffle(order)
    held = set(order[:heldout_size])
    train = [r for i, r in enumerate(records) if i not in held]
    return train, [r for i, r in enumerate(records) if i in held]


def batches(records: Sequence[PromptRecord], batch_size: int, seed: int,
            epoch_shuffle: bool = True) -> Iterator[list[PromptRecord]]:
    """Endless full-size batches in an order fixed by the seed, so every run of an experiment sees
    the same prompts in the same order. Epochs are concatenated (a batch may span two); each epoch
    is reshuffled from (seed, epoch) - not seed+epoch, which would make seeds 0 and 1 share orders."""
    if not records:
        raise ValueError("no records to batch")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    batch: list[PromptRecord] = []
    epoch = 0
    while True:
        order = list(range(len(records)))
        if epoch_shuffle:
            random.Random(f"batches:{seed}:{epoch}").shuffle(order)
        for i in order:
            batch.append(records[i])
            if len(batch) == batch_size:
                yield batch
                batch = []
        epoch += 1


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, falling back to EOS (many causal LMs have no pad token)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad token nor an EOS token")
    return int(pad)


def _token_ids(tokenizer: Any, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
    if not texts:
        raise ValueError("no texts to encode")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"text {bad[0]} is {type(texts[bad[0]]).__name__}, not a string")
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]]


def encode_prompts(tokenizer: Any, texts: Sequence[str],
                   max_prompt_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids and mask [B, P] (P = longest prompt, at most `max_prompt_tokens`).

    Long prompts keep their LAST tokens, so a chat template's generation prompt survives. Special
    tokens are added only when the tokenizer has no chat template (a template already has them).
    """
    if max_prompt_tokens < 1:
        raise ValueError(f"max_prompt_tokens must be at least 1, got {max_prompt_tokens}")
    add_special = not getattr(tokenizer, "chat_template", None)
    seqs = [ids[-max_prompt_tokens:] for ids in _token_ids(tokenizer, texts, add_special)]
    empty = [i for i, s in enumerate(seqs) if not s]
    if empty:
        raise ValueError(f"prompt {empty[0]} encodes to no tokens")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_token_id(tokenizer), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


def encode_records(tokenizer: Any, records: Sequence[PromptRecord],
                   max_prompt_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Records as the model sees them (chat template applied), left-padded: what training and
    evaluation both feed to the models."""
    return encode_prompts(tokenizer, [format_prompt(tokenizer, r) for r in records], max_prompt_tokens)


def encode_references(tokenizer: Any, texts: Sequence[str], max_tokens: int, eos_token_id: int | None = None,
                      *, eos: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded reference ids [B, T] and float mask [B, T], each ending with EOS.

    A reference longer than `max_tokens` is cut to `max_tokens - 1` tokens before the EOS. `eos`
    is an alias of `eos_token_id`; when both are None the tokenizer's EOS is used.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    eos_id = eos_token_id if eos_token_id is not None else eos if eos is not None else tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("no EOS token id given and the tokenizer has none")
    seqs = [ids[:max_tokens - 1] + [int(eos_id)] for ids in _token_ids(tokenizer, texts, False)]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_token_id(tokenizer), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.float32)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1.0
    return ids, mask
