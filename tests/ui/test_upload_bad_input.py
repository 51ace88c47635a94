"""Bad input through the real upload path (browser -> Gradio upload -> the Data tab's handler):
every malformed file gets an error toast naming file, line/row and field; nothing is stored; the
app keeps serving, and BOM / CRLF / over-long prompts are accepted as documented."""

from __future__ import annotations

import io
import json
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.ui.test_dashboard import close_toasts, expect_error_toast, open_tab, upload, wait_text

pytestmark = pytest.mark.ui


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("rows.jsonl", '{"prompt": "x"}\n')
    return buf.getvalue()


REJECTED = [
    ("empty.jsonl", b"", "empty.jsonl: the file is empty"),
    ("binary.jsonl", bytes(range(256)) * 4, "binary.jsonl, line 1: NUL byte"),
    ("utf16.jsonl", '{"prompt": "hi"}\n'.encode("utf-16"), "utf16.jsonl: the file is UTF-16"),
    ("latin1.csv", "prompt\ncaf\u00e9 au lait\n".encode("latin-1"), "latin1.csv, line 2: not valid UTF-8"),
    ("badline.jsonl", b'{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c"\n', "badline.jsonl, line 3: invalid JSON"),
    ("object.json", json.dumps({"prompt": "one row"}).encode(), "object.json, line 1: this JSON object is a single row"),
    ("nofield.jsonl", b'{"query": "a", "answer": "b"}\n', "nofield.jsonl, line 1, field 'prompt': no prompt field"),
    ("spaces.jsonl", b'{"prompt": "ok"}\n{"prompt": "   "}\n', "spaces.jsonl, line 2, field 'prompt': prompt is empty"),
    ("number.jsonl", b'{"prompt": "ok"}\n{"prompt": 42}\n', "number.jsonl, line 2, field 'prompt': prompt must be a string"),
    ("ragged.csv", b"prompt,response\na,b\nc,d,e\n", "ragged.csv, line 3: ragged row"),
    ("types.parquet", _parquet(pa.table({"prompt": [1, 2], "response": ["a", "b"]})),
     "types.parquet, field 'prompt': column has type int64"),
    ("archive.jsonl", _zip(), "archive.jsonl: this is a zip archive, not JSONL"),
]


def _fresh_data_tab(page, url: str) -> None:
    """The upload box holds one file; a fresh page gives an empty one (as a user re-opening it)."""
    page.goto(url)
    open_tab(page, "Data")


def test_every_malformed_upload_is_refused_and_the_app_keeps_serving(page, dashboard, tmp_path):
    url, db, _ = dashboard
    before = db.list_datasets()
    for name, content, expected in REJECTED:
        _fresh_data_tab(page, url)
        upload(page, tmp_path, name, content)
        expect_error_toast(page, expected)
        close_toasts(page)
        assert db.list_datasets() == before, f"{name} stored something"
        print(f"rejected {name}: {expected}")
    print(f"files rejected: {len(REJECTED)}; datasets stored: {len(db.list_datasets()) - len(before)}")

    # Over the cap (this app: 1 MB): refused by Gradio before the handler, the limit named.
    _fresh_data_tab(page, url)
    upload(page, tmp_path, "huge.jsonl", b'{"prompt": "' + b"x" * (1_100_000) + b'"}\n')
    page.locator("[data-testid=toast-body].error").first.wait_for()
    toast = page.locator("[data-testid=toast-body].error").first.inner_text().lower()
    assert "1" in toast and "mb" in toast, toast
    close_toasts(page)
    assert db.list_datasets() == before
    print(f"rejected huge.jsonl: {toast!r}")

    # Still serving: accepted edge cases go through the same path.
    _fresh_data_tab(page, url)
    upload(page, tmp_path, "bom.jsonl", b'\xef\xbb\xbf{"prompt": "with a BOM", "response": "yes"}\n')
    wait_text(page, "#dataset-summary", "1 rows")
    _fresh_data_tab(page, url)
    upload(page, tmp_path, "crlf.csv", b"prompt,response\r\nwindows line ends,fine\r\nsecond,row\r\n")
    wait_text(page, "#dataset-summary", "2 rows")
    _fresh_data_tab(page, url)
    upload(page, tmp_path, "long.txt", ("word " * 3000).encode() + b"\nshort prompt\n")
    wait_text(page, "#dataset-summary", "longer than 8,000 characters")
    stored = {d["name"] for d in db.list_datasets()} - {d["name"] for d in before}
    assert stored == {"bom.jsonl", "crlf.csv", "long.txt"}
