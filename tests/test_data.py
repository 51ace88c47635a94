"""Dataset reading (every format and row shape), prompt formatting, splits, batching and tokenising."""

from __future__ import annotations

import hashlib
import io
import itertools
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerFast

from minillm_dash.data import (
    DEFAULT_MAX_BYTES, MAX_PROMPT_CHARS, PromptDataset, PromptRecord, batches, builtin_dataset, encode_prompts,
    encode_references, format_prompt, from_rows, load_dataset_bytes, load_dataset_file, split_train_heldout,
    to_rows,
)
from minillm_dash.errors import ConfigError

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
SPECIALS = ["[PAD]", "[UNK]", "</s>", "<s>", "<|user|>", "<|assistant|>", "<|system|>"]
WORDS = [f"w{i}" for i in range(30)] + ["hello", "world", "be", "brief", "hi"]


def make_tokenizer(chat_template: str | None = None, pad: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer built in code (no hub): 'wN' -> id 7+N; BOS is added as a special token."""
    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    backend.add_special_tokens(SPECIALS)
    backend.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>", bos_token="<s>",
                                  pad_token="[PAD]" if pad else None)
    if chat_template:
        tok.chat_template = chat_template
    return tok


def wid(n: int) -> int:
    return len(SPECIALS) + n


def jsonl(*rows: dict) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


# ---------------------------------------------------------------- formats and shapes

@pytest.mark.parametrize("rows, shape, prompt, reference", [
    ([{"prompt": "p", "response": "r"}], "prompt/response", "p", "r"),
    ([{"prompt": "p", "completion": "c"}], "prompt/completion", "p", "c"),
    ([{"question": "q", "answer": "a"}], "question/answer", "q", "a"),
    ([{"instruction": "Do it", "input": "the thing", "output": "done"}], "alpaca", "Do it\n\nthe thing", "done"),
    ([{"instruction": "Do it", "input": "", "output": "done"}], "alpaca", "Do it", "done"),
    ([{"instruction": "Do it", "context": "ctx", "response": "ok", "category": "qa"}], "dolly", "Do it\n\nctx", "ok"),
    ([{"text": "just text"}], "text", "just text", None),
    ([{"Prompt": "  spaced  ", "Response": "r "}], "prompt/response", "spaced", "r"),
    ([{"prompt": "p", "response": ""}], "prompt/response", "p", None),
])
def test_jsonl_row_shapes(rows, shape, prompt, reference):
    ds = load_dataset_bytes(jsonl(*rows), "d.jsonl")
    assert ds.detected_format == f"jsonl:{shape}"
    assert ds.fields == tuple(rows[0])
    rec = ds.records[0]
    assert (rec.prompt, rec.messages, rec.reference, rec.source_line) == (prompt, None, reference, 1)


def test_messages_prompt_is_turns_up_to_last_user_and_trailing_assistant_is_reference():
    turns = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
             {"role": "assistant", "content": "hello"}, {"role": "user", "content": "w1"}]
    ds = load_dataset_bytes(jsonl({"messages": turns + [{"role": "assistant", "content": "w2"}]},
                                  {"messages": turns}), "chat.jsonl")
    assert ds.detected_format == "jsonl:messages"
    first, second = ds.records
    assert first.prompt is None and first.messages == tuple(turns) and first.reference == "w2"
    assert second.messages == tuple(turns) and second.reference is None
    assert not ds.has_references


def test_json_list_and_wrapped_object_report_the_line_each_row_starts_on():
    rows = [{"prompt": "a", "response": "x"}, {"prompt": "b", "response": "y"}]
    listed = load_dataset_bytes(json.dumps(rows, indent=2).encode(), "d.json")
    assert listed.detected_format == "json:prompt/response"
    assert [r.source_line for r in listed.records] == [2, 6]
    wrapped = load_dataset_bytes(b'{"version": 1,\n "data": [\n  {"prompt": "a"},\n\n  {"prompt": "b"}]}', "w.json")
    assert [(r.prompt, r.source_line) for r in wrapped.records] == [("a", 3), ("b", 5)]


def test_csv_header_is_line_1_and_quoted_newlines_keep_line_numbers_honest():
    data = b'instruction,input,output\nSay hi,"to Bob, twice",hi Bob\n"two\nlines",,ok\nlast,,done\n'
    ds = load_dataset_bytes(data, "a.csv")
    assert ds.detected_format == "csv:alpaca" and ds.fields == ("instruction", "input", "output")
    assert [(r.prompt, r.source_line) for r in ds.records] == [
        ("Say hi\n\nto Bob, twice", 2), ("two\nlines", 3), ("last", 5)]
    assert ds.has_references


def test_tsv():
    ds = load_dataset_bytes(b"question\tanswer\nq1\ta1\n", "d.tsv")
    assert ds.detected_format == "tsv:question/answer" and ds.records[0].reference == "a1"


def test_parquet_prompt_response_and_messages():
    table = pa.table({"prompt": ["a", "b"], "response": ["x", None], "extra": [1, 2]})
    ds = load_dataset_bytes(parquet_bytes(table), "d.parquet")
    assert ds.detected_format == "parquet:prompt/response" and ds.fields == ("prompt", "response", "extra")
    assert [(r.prompt, r.reference, r.source_line) for r in ds.records] == [("a", "x", 1), ("b", None, 2)]
    chat = pa.table({"messages": [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]]})
    ds = load_dataset_bytes(parquet_bytes(chat), "c.parquet")
    assert ds.detected_format == "parquet:messages" and ds.records[0].reference == "yo"


def test_text_one_prompt_per_line_blank_lines_skipped_crlf():
    ds = load_dataset_bytes(b"first prompt\r\n\r\n  second  \r\nthird", "p.txt")
    assert ds.detected_format == "text" and ds.fields == ("text",)
    assert [(r.prompt, r.source_line) for r in ds.records] == [("first prompt", 1), ("second", 3), ("third", 4)]
    assert not ds.has_references


@pytest.mark.parametrize("name, data", [
    ("bom.jsonl", b'\xef\xbb\xbf{"prompt": "p", "response": "r"}\r\n'),
    ("bom.csv", b"\xef\xbb\xbfprompt,response\r\np,r\r\n"),
    ("bom.txt", b"\xef\xbb\xbfp\r\n"),
])
def test_utf8_bom_and_crlf_are_accepted(name, data):
    ds = load_dataset_bytes(data, name)
    assert ds.records[0].prompt == "p"
    assert all(not f.startswith("\ufeff") for f in ds.fields)
    assert ds.content_hash == hashlib.sha256(data).hexdigest()  # hash of the raw bytes, BOM included


def test_non_ascii_utf8_and_line_separator_inside_json_strings():
    data = jsonl({"prompt": "Café \u2028 naïve 日本", "response": "ok"}, {"prompt": "b"})
    ds = load_dataset_bytes(data, "u.jsonl")
    assert ds.records[0].prompt == "Café \u2028 naïve 日本" and ds.records[1].source_line == 2


def test_load_dataset_file_uses_the_upload_name_for_format_and_errors(tmp_path):
    path = tmp_path / "upload-1234"
    path.write_bytes(jsonl({"prompt": "p"}))
    ds = load_dataset_file(path, name="mine.jsonl")
    assert ds.name == "mine.jsonl" and ds.detected_format == "jsonl:prompt"
    other = tmp_path / "x.txt"
    other.write_text("a\n", encoding="utf-8")
    assert load_dataset_file(other).name == "x.txt"
    assert DEFAULT_MAX_BYTES == 50 * 1024 * 1024


def test_warnings_for_long_prompts_missing_references_and_duplicates():
    data = jsonl({"prompt": "x" * (MAX_PROMPT_CHARS + 1), "response": "r"}, {"prompt": "a"}, {"prompt": "a"})
    ds = load_dataset_bytes(data, "w.jsonl")
    assert len(ds.records) == 3  # long prompts are kept, truncated only when tokenised
    text = " | ".join(ds.warnings)
    assert "1 prompt(s) longer than 8,000 characters (first at line 1)" in text
    assert "2 of 3 rows have no reference" in text
    assert "1 duplicate prompt(s) (first at line 3)" in text


def test_rows_round_trip_through_json():
    turns = [{"role": "user", "content": "hi"}]
    ds = load_dataset_bytes(jsonl({"messages": turns}, {"messages": turns + [
        {"role": "assistant", "content": "yo"}, {"role": "user", "content": "again"}]}), "c.jsonl")
    rows = json.loads(json.dumps(to_rows(ds)))
    back = from_rows(rows, ds.name, ds.detected_format, ds.fields, ds.content_hash, ds.warnings)
    assert back == ds


def test_builtin_dataset_has_references_everywhere():
    ds = builtin_dataset()
    assert ds.name == "builtin" and ds.detected_format == "jsonl:prompt/response"
    assert len(ds.records) >= 90 and ds.has_references and ds.warnings == ()
    assert all(0 < len(r.reference) < 300 for r in ds.records)


# ---------------------------------------------------------------- formatting

def test_format_prompt_with_chat_template():
    tok = make_tokenizer(TEMPLATE)
    plain = PromptRecord("hello world", None, "r", 1)
    assert format_prompt(tok, plain) == "<|user|> hello world <|assistant|>"
    chat = PromptRecord(None, ({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}), None, 1)
    assert format_prompt(tok, chat) == "<|system|> be brief <|user|> hi <|assistant|>"


def test_format_prompt_without_chat_template():
    tok = make_tokenizer(None)
    assert format_prompt(tok, PromptRecord("hello world", None, None, 1)) == "hello world"
    chat = PromptRecord(None, ({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}), None, 1)
    assert format_prompt(tok, chat) == "system: be brief\nuser: hi"


# ---------------------------------------------------------------- split and batches

RECORDS = [PromptRecord(f"p{i}", None, None, i + 1) for i in range(20)]


def test_split_is_deterministic_disjoint_and_complete():
    train, held = split_train_heldout(RECORDS, 5, seed=3)
    assert (train, held) == split_train_heldout(RECORDS, 5, seed=3)
    assert len(held) == 5 and len(train) == 15
    assert set(r.prompt for r in train).isdisjoint(r.prompt for r in held)
    assert sorted(train + held, key=lambda r: r.source_line) == RECORDS
    assert held == sorted(held, key=lambda r: r.source_line)  # file order kept
    assert split_train_heldout(RECORDS, 5, seed=4)[1] != held
    assert set(held) <= set(split_train_heldout(RECORDS, 6, seed=3)[1])  # growing the held-out set extends it
    assert split_train_heldout(RECORDS, 0, seed=3) == (RECORDS, [])


@pytest.mark.parametrize("size", [20, 25, -1])
def test_split_must_leave_a_training_record(size):
    with pytest.raises(ConfigError) as e:
        split_train_heldout(RECORDS, size, seed=0)
    assert e.value.field == "heldout_size"
    print(f"refused heldout_size={size}: {e.value}")


def test_batches_are_deterministic_full_and_cover_each_epoch():
    first = list(itertools.islice(batches(RECORDS, 4, seed=1), 10))
    assert first == list(itertools.islice(batches(RECORDS, 4, seed=1), 10))
    assert all(len(b) == 4 for b in first)
    epoch0 = [r for b in first[:5] for r in b]
    epoch1 = [r for b in first[5:] for r in b]
    assert sorted(epoch0, key=lambda r: r.source_line) == RECORDS == sorted(epoch1, key=lambda r: r.source_line)
    assert epoch0 != epoch1  # reshuffled per epoch
    assert first != list(itertools.islice(batches(RECORDS, 4, seed=2), 10))
    assert [r for b in itertools.islice(batches(RECORDS, 7, seed=1, epoch_shuffle=False), 3) for r in b][:20] == RECORDS


def test_batches_larger_than_the_dataset_cycle():
    out = next(batches(RECORDS[:3], 5, seed=0))
    assert len(out) == 5 and set(out[:3]) == set(RECORDS[:3])


# ---------------------------------------------------------------- tokenising

def test_encode_prompts_left_pads_and_adds_bos_without_template():
    tok = make_tokenizer(None)
    ids, mask = encode_prompts(tok, ["w1 w2 w3", "w4"], max_prompt_tokens=10)
    bos, pad = tok.bos_token_id, tok.pad_token_id
    assert ids.dtype == torch.long and mask.dtype == torch.long
    assert ids.tolist() == [[bos, wid(1), wid(2), wid(3)], [pad, pad, bos, wid(4)]]
    assert mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]


def test_encode_prompts_keeps_the_last_tokens_so_the_generation_prompt_survives():
    tok = make_tokenizer(TEMPLATE)
    text = format_prompt(tok, PromptRecord(" ".join(f"w{i}" for i in range(20)), None, None, 1))
    ids, mask = encode_prompts(tok, [text, "w0"], max_prompt_tokens=4)
    assert ids.shape == (2, 4)
    assert ids[0].tolist() == [wid(17), wid(18), wid(19), tok.convert_tokens_to_ids("<|assistant|>")]
    assert ids[1].tolist() == [tok.pad_token_id] * 3 + [wid(0)]  # no BOS: the template brings its own tokens
    assert mask.tolist() == [[1, 1, 1, 1], [0, 0, 0, 1]]


def test_pad_falls_back_to_eos():
    tok = make_tokenizer(None, pad=False)
    ids, _ = encode_prompts(tok, ["w1 w2", "w1"], max_prompt_tokens=8)
    assert ids[1, 0].item() == tok.eos_token_id


def test_encode_references_right_pads_and_appends_eos():
    tok = make_tokenizer(TEMPLATE)
    eos = tok.eos_token_id
    ids, mask = encode_references(tok, ["w1 w2", "w3", "w1 w2 w3 w4 w5"], max_tokens=4, eos_token_id=eos)
    pad = tok.pad_token_id
    assert ids.tolist() == [[wid(1), wid(2), eos, pad], [wid(3), eos, pad, pad], [wid(1), wid(2), wid(3), eos]]
    assert mask.dtype == torch.float32
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert torch.equal(encode_references(tok, ["w1"], 4, eos=eos)[0], encode_references(tok, ["w1"], 4)[0])


def test_encode_rejects_bad_arguments():
    tok = make_tokenizer(None)
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        encode_prompts(tok, ["w1"], 0)
    with pytest.raises(ValueError, match="no texts"):
        encode_references(tok, [], 4)
    with pytest.raises(ValueError, match="not a string"):
        encode_references(tok, [None], 4)


def test_dataset_is_immutable_and_hashable_by_content():
    a = load_dataset_bytes(b"p\n", "a.txt")
    b = load_dataset_bytes(b"p\n", "b.txt")
    assert isinstance(a, PromptDataset) and a.content_hash == b.content_hash
    with pytest.raises(AttributeError):
        a.name = "x"
