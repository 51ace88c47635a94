"""Every malformed upload is refused with a DatasetError naming the file, the 1-based line and the field.

Run with `-s` to see the one-line summary of each rejected file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from minillm_dash.data import DEFAULT_MAX_BYTES, builtin_dataset, load_dataset_bytes, load_dataset_file
from minillm_dash.errors import DatasetError


def parquet_bytes(columns: dict) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def jsonl(*rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def zip_bytes() -> bytes:
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("data.jsonl", '{"prompt": "p"}\n')
    return buf.getvalue()


GOOD = {"prompt": "fine", "response": "ok"}
USER = {"role": "user", "content": "hi"}
ASSISTANT = {"role": "assistant", "content": "yo"}

# (file name, content, expected line, expected field, words the message must contain)
CASES = [
    ("empty.jsonl", b"", None, None, "empty"),
    ("blank.jsonl", b" \r\n\n\t\n", None, None, "empty"),
    ("bom-only.txt", b"\xef\xbb\xbf\n", None, None, "empty"),
    ("empty-prompt.jsonl", jsonl(GOOD, {"prompt": "", "response": "x"}), 2, "prompt", "prompt is empty"),
    ("space-prompt.csv", b'prompt,response\nok,r\n"   ",r\n', 3, "prompt", "prompt is empty"),
    ("int-prompt.jsonl", jsonl({"prompt": 42}), 1, "prompt", "must be a string, got int"),
    ("list-prompt.json", b'[\n {"prompt": ["a"]}\n]', 2, "prompt", "must be a string, got list"),
    ("null-prompt.jsonl", jsonl(GOOD, GOOD, {"prompt": None}), 3, "prompt", "prompt is null"),
    ("bad-json-line.jsonl", jsonl(GOOD, GOOD) + b'{"prompt": "x",}\n', 3, None, "invalid JSON: Expecting"),
    ("bad.json", b'[\n {"prompt": "a"},\n {"prompt": "b"\n]', 4, None, "invalid JSON: Expecting ',' delimiter"),
    ("lines-in.json", jsonl(GOOD, GOOD), 2, None, "use the .jsonl extension"),
    ("ragged-short.csv", b"prompt,response\na,b\nc\n", 3, "response", "ragged row: 1 fields, the header has 2"),
    ("ragged-long.csv", b"prompt,response\na,b,c\n", 2, None, "ragged row: 3 fields, the header has 2"),
    ("unclosed.csv", b'prompt,response\na,b\n"c,d\ne,f\n', 3, None, "a quoted field is never closed"),
    ("dup-column.csv", b"prompt,Prompt\na,b\n", 1, "Prompt", "duplicate column"),
    ("int-prompt.parquet", parquet_bytes({"prompt": [1, 2]}), None, "prompt", "type int64; expected string"),
    ("float-response.parquet", parquet_bytes({"prompt": ["a"], "response": [1.5]}), None, "response",
     "type double; expected string"),
    ("messages-type.parquet", parquet_bytes({"messages": ["not a list"]}), None, "messages",
     "expected list<struct<role: string, content: string>>"),
    ("null-prompt.parquet", parquet_bytes({"prompt": ["a", None]}), 2, "prompt", "prompt is null"),
    ("no-prompt.jsonl", jsonl({"foo": "a", "bar": "b"}), 1, "prompt",
     "no prompt field: found ['bar', 'foo']; accepted: messages, instruction, prompt, question, text"),
    ("no-prompt.csv", b"foo,bar\na,b\n", 1, "prompt", "found ['bar', 'foo']; accepted:"),
    ("no-prompt.parquet", parquet_bytes({"foo": ["a"]}), None, "prompt", "found ['foo']; accepted:"),
    ("row-lacks-prompt.jsonl", jsonl(GOOD, {"text": "x"}), 2, "prompt", "no 'prompt' field"),
    ("empty-list.json", b"[]", None, None, "no rows found"),
    ("empty-data.json", b'{"data": []}', None, None, "no rows found"),
    ("header-only.csv", b"prompt,response\n", None, None, "no rows found"),
    ("no-rows.parquet", parquet_bytes({"prompt": pa.array([], pa.string())}), None, None, "no rows found"),
    ("zip.jsonl", zip_bytes(), None, None, "this is a zip archive, not JSONL"),
    ("xlsx.csv", zip_bytes(), None, None, "zip archive, not CSV"),
    ("gzip.jsonl", b"\x1f\x8b\x08\x00rest", None, None, "gzip-compressed"),
    ("binary.jsonl", b'{"prompt": "a"}\n\x00\x01\x02\xff', 2, None, "binary data or UTF-16 text without a BOM, not UTF-8"),
    ("utf16.csv", "prompt\nhi\n".encode("utf-16"), None, None, "UTF-16"),
    ("utf16-no-bom.txt", "hello\n".encode("utf-16-le"), 1, None, "NUL byte"),
    ("latin1.txt", "first\ncaf\u00e9\n".encode("latin-1"), 2, None,
     "not valid UTF-8: byte 0xE9 at byte offset 9; the file looks Latin-1"),
    ("not-rows.json", b'{"name": "x", "size": 3}', 1, None, "exactly one list of rows"),
    ("two-lists.json", b'{"train": [], "test": []}', 1, None, "exactly one list of rows"),
    ("single-row.json", b'{"prompt": "p", "response": "r"}', 1, None, "a single row"),
    ("scalar.json", b'"just a string"', 1, None, "expected a list of rows, got string"),
    ("row-not-object.json", b'[\n {"prompt": "a"},\n "b"\n]', 3, None, "row to be a JSON object, got string"),
    ("list-line.jsonl", b'{"prompt": "a"}\n["b"]\n', 2, None, "expected a JSON object per line, got list"),
    ("no-user.jsonl", jsonl({"messages": [ASSISTANT]}), 1, "messages", "no user turn"),
    ("bad-role.jsonl", jsonl({"messages": [{"role": "bot", "content": "x"}, USER]}), 1, "messages[0].role",
     "role must be one of system, user, assistant"),
    ("parts.jsonl", jsonl({"messages": [{"role": "user", "content": [{"type": "text"}]}]}), 1,
     "messages[0].content", "content must be a string, got list"),
    ("two-replies.jsonl", jsonl({"messages": [USER, ASSISTANT, ASSISTANT]}), 1, "messages", "only one assistant turn"),
    ("empty-turn.jsonl", jsonl({"messages": [USER, {"role": "user", "content": " "}]}), 1, "messages[1].content",
     "last user turn is empty"),
    ("no-turns.jsonl", jsonl({"messages": []}), 1, "messages", "non-empty list"),
    ("int-input.jsonl", jsonl({"instruction": "a", "input": 3, "output": "b"}), 1, "input", "must be a string"),
    ("int-response.jsonl", jsonl({"prompt": "a", "response": 4}), 1, "response", "must be a string, got int"),
    ("data.xml", b"<rows/>", None, None, "unsupported file type .xml; accepted: .jsonl"),
    ("text.parquet", b"prompt\nhello\n", None, None, "not a Parquet file"),
    ("parquet.csv", parquet_bytes({"prompt": ["a"]}), None, None, "this is a Parquet file, not CSV"),
    ("cut.parquet", parquet_bytes({"prompt": ["a"]})[:-10] + b"PAR1", None, None, "unreadable Parquet file"),
]


@pytest.mark.parametrize("name, data, line, field, words", CASES, ids=[c[0] for c in CASES])
def test_rejected_with_location(name, data, line, field, words):
    with pytest.raises(DatasetError) as info:
        load_dataset_bytes(data, name)
    err = info.value
    print(f"rejected {name}: {err}")
    assert (err.file, err.line, err.field) == (name, line, field)
    assert words in str(err)
    assert str(err).startswith(name + (f", line {line}" if line else "") + (f", field '{field}'" if field else ""))


def test_too_large_is_refused_before_reading(tmp_path, monkeypatch):
    big = tmp_path / "big.jsonl"
    with big.open("wb") as f:
        f.truncate(DEFAULT_MAX_BYTES + 1)  # sparse: costs no disk

    def no_read(self):
        raise AssertionError("read the file before checking its size")

    monkeypatch.setattr(Path, "read_bytes", no_read)
    with pytest.raises(DatasetError) as info:
        load_dataset_file(big)
    err = info.value
    print(f"rejected {big.name}: {err}")
    assert (err.file, err.line, err.field) == ("big.jsonl", None, None)
    assert "larger than the 50 MB limit" in str(err)


def test_too_large_bytes_and_custom_limit():
    with pytest.raises(DatasetError, match=r"larger than the 0.5 MB limit"):
        load_dataset_bytes(b"x" * (512 * 1024 + 1), "big.txt", max_bytes=512 * 1024)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DatasetError, match="file not found"):
        load_dataset_file(tmp_path / "nope.jsonl")
    with pytest.raises(DatasetError, match="folder"):
        load_dataset_file(tmp_path)


def test_builtin_passes_the_same_validation():
    # builtin_dataset() goes through the same reader; a broken row would raise here.
    assert builtin_dataset().records
