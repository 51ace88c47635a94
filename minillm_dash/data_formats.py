"""Per-format readers behind `data.load_dataset_bytes`: bytes -> validated (prompt, messages, reference) rows.

Kept apart from `data` so the public API stays short. Every rejection is a `DatasetError` naming the
file, the 1-based line (CSV: the header is line 1; Parquet: the row number) and the field.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

from .errors import DatasetError

# extension -> reader name; the content is checked against it (see `check_magic`).
EXTENSIONS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
    ".parquet": "parquet", ".pq": "parquet", ".txt": "text",
}
_LABELS = {"jsonl": "JSONL", "json": "JSON", "csv": "CSV", "tsv": "TSV", "parquet": "Parquet", "text": "text"}

# Row shapes, in priority order: (family, prompt key, optional extra-input keys, reference keys).
_FAMILIES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("messages", "messages", (), ()),
    ("instruction", "instruction", ("input", "context"), ("output", "response")),
    ("prompt", "prompt", (), ("response", "completion", "output", "answer")),
    ("question", "question", (), ("answer", "response")),
    ("text", "text", (), ()),
)
ACCEPTED_PROMPT_FIELDS = tuple(f[1] for f in _FAMILIES)
CHAT_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Shape:
    """The row shape chosen for a whole file, from the union of its keys."""

    family: str
    prompt_key: str
    extra_key: str | None
    reference_key: str | None

    @property
    def name(self) -> str:
        if self.family == "instruction":
            return "dolly" if self.extra_key == "context" else "alpaca"
        if self.family in ("messages", "text"):
            return self.family
        return f"{self.prompt_key}/{self.reference_key}" if self.reference_key else self.prompt_key


@dataclass(frozen=True)
class ParsedRow:
    prompt: str | None
    messages: tuple[dict, ...] | None
    reference: str | None
    line: int


# ---------------------------------------------------------------- bytes -> text

def format_for(name: str) -> str | None:
    """Reader name for a file name's extension, or None when the extension is not accepted."""
    lower = name.lower()
    for ext, fmt in EXTENSIONS.items():
        if lower.endswith(ext):
            return fmt
    return None


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def check_magic(data: bytes, fmt: str, file: str) -> None:
    """Reject content that does not match the extension (a zip renamed .jsonl, text named .parquet)."""
    label = _LABELS[fmt]
    xlsx = " (an Excel .xlsx workbook is one too: export it as CSV)" if fmt in ("csv", "tsv") else ""
    kinds = ((b"PK\x03\x04", "a zip archive", xlsx),
             (b"\x1f\x8b", "gzip-compressed data", ": decompress it first"),
             (b"%PDF", "a PDF document", ""))
    for magic, what, hint in kinds:
        if data.startswith(magic):
            raise DatasetError(f"this is {what}, not {label}{hint}", file=file)
    if fmt == "parquet":
        if not (data.startswith(b"PAR1") and data.endswith(b"PAR1")):
            raise DatasetError("not a Parquet file (the PAR1 marker is missing or the file is cut short)",
                               file=file)
    elif data.startswith(b"PAR1"):
        raise DatasetError(f"this is a Parquet file, not {label}: give it the .parquet extension", file=file)


def decode_text(data: bytes, file: str) -> str:
    """UTF-8 (a BOM is dropped) or a DatasetError naming the encoding problem and where it is."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DatasetError("the file is UTF-16 (or UTF-32) encoded; save it as UTF-8", file=file)
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DatasetError(f"NUL byte at byte offset {nul}: binary data or UTF-16 text without a BOM, "
                           f"not UTF-8 text", file=file, line=_line_of(data, nul))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = _line_of(data, e.start)
        raise DatasetError(
            f"not valid UTF-8: byte 0x{data[e.start]:02X} at byte offset {e.start}; the file looks "
            f"Latin-1/Windows-1252 encoded: save it as UTF-8", file=file, line=line) from e
    return text[1:] if text.startswith("\ufeff") else text


# ---------------------------------------------------------------- text -> raw rows

def _lines(text: str) -> list[str]:
    """Split on LF only (JSON strings may hold U+2028), dropping a CR from CRLF endings."""
    return [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]


def read_text_lines(text: str) -> list[ParsedRow]:
    """.txt: one prompt per line; blank lines are skipped, surrounding whitespace stripped."""
    return [ParsedRow(ln.strip(), None, None, i) for i, ln in enumerate(_lines(text), 1) if ln.strip()]


def read_jsonl(text: str, file: str) -> list[tuple[dict, int]]:
    """One JSON object per non-blank line."""
    rows = []
    for i, ln in enumerate(_lines(text), 1):
        if not ln.strip():
            continue
        try:
            obj = json.loads(ln)
        except json.JSONDecodeError as e:
            raise DatasetError(f"invalid JSON: {e.msg} (column {e.colno})", file=file, line=i) from e
        if not isinstance(obj, dict):
            raise DatasetError(f"expected a JSON object per line, got {_type(obj)}", file=file, line=i)
        rows.append((obj, i))
    return rows


def read_json(text: str, file: str) -> list[tuple[dict, int]]:
    """A list of row objects, or an object holding exactly one list of rows ({"data": [...]})."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        hint = "; one object per line is JSON Lines: use the .jsonl extension" if e.msg == "Extra data" else ""
        raise DatasetError(f"invalid JSON: {e.msg} (column {e.colno}){hint}", file=file, line=e.lineno) from e
    start = len(text) - len(text.lstrip())
    if isinstance(doc, dict):
        key = _rows_key(doc, file)
        items = _scan_object_for(text, start, key)
    elif isinstance(doc, list):
        items = _scan_array(text, start)
    else:
        raise DatasetError(f"expected a list of rows, got {_type(doc)}", file=file, line=1)
    rows = []
    for obj, line in items:
        if not isinstance(obj, dict):
            raise DatasetError(f"expected each row to be a JSON object, got {_type(obj)}", file=file, line=line)
        rows.append((obj, line))
    return rows


def _rows_key(doc: dict, file: str) -> str:
    lists = [k for k, v in doc.items() if isinstance(v, list)]
    if {k.strip().lower() for k in doc} & set(ACCEPTED_PROMPT_FIELDS):
        raise DatasetError("this JSON object is a single row: put rows in a list, [{...}, {...}]", file=file, line=1)
    if len(lists) != 1:
        raise DatasetError(f"expected a list of rows or an object with exactly one list of rows "
                           f"(like {{\"data\": [...]}}); found keys {list(doc)[:10]}", file=file, line=1)
    return lists[0]


_DECODER = json.JSONDecoder()


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _scan_array(text: str, pos: int) -> list[tuple[Any, int]]:
    """Items of the (already validated) JSON array at `pos`, each with the line it starts on."""
    out: list[tuple[Any, int]] = []
    pos = _skip_ws(text, pos + 1)  # past '['
    while text[pos] != "]":
        value, end = _DECODER.raw_decode(text, pos)
        out.append((value, text.count("\n", 0, pos) + 1))
        pos = _skip_ws(text, end)
        if text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
    return out


def _scan_object_for(text: str, pos: int, key: str) -> list[tuple[Any, int]]:
    """Items of the list stored under `key` in the (already validated) JSON object at `pos`."""
    found: list[tuple[Any, int]] = []
    pos = _skip_ws(text, pos + 1)  # past '{'
    while text[pos] != "}":
        k, pos = _DECODER.raw_decode(text, pos)
        pos = _skip_ws(text, _skip_ws(text, pos) + 1)  # past ':'
        if k == key:
            found = _scan_array(text, pos)  # the last duplicate wins, as in json.loads
        _, pos = _DECODER.raw_decode(text, pos)
        pos = _skip_ws(text, pos)
        if text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
    return found


def read_csv(text: str, file: str, delimiter: str) -> tuple[list[tuple[dict, int]], list[str]]:
    """Header row + data rows; the header is line 1, a row's line is where it starts."""
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))  # long prompts are legal
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[tuple[dict, int]] = []
    prev_end = 0  # last line of the previous record; a record starts on the next one
    try:
        header = next(reader, None)
        if header is None:
            raise DatasetError("the file is empty", file=file)
        header = [h.strip() for h in header]
        _check_header(header, file)
        prev_end = reader.line_num
        for cells in reader:
            line, prev_end = prev_end + 1, reader.line_num
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # blank line
            if len(cells) != len(header):
                missing = header[len(cells)] if len(cells) < len(header) else None
                raise DatasetError(f"ragged row: {len(cells)} fields, the header has {len(header)}",
                                   file=file, line=line, field=missing)
            rows.append((dict(zip(header, cells)), line))
    except csv.Error as e:
        hint = ": a quoted field is never closed" if "end of data" in str(e) else ""
        raise DatasetError(f"malformed CSV: {e}{hint}", file=file, line=prev_end + 1) from e
    return rows, header


def _check_header(header: list[str], file: str) -> None:
    seen: set[str] = set()
    for h in header:
        if h.lower() in seen:
            raise DatasetError("duplicate column in the header", file=file, line=1, field=h)
        seen.add(h.lower())


def read_parquet(data: bytes, file: str) -> tuple[list[tuple[dict, int]], list[str], Shape]:
    """Rows of a Parquet table (line = 1-based row number); column types are checked first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"unreadable Parquet file: {e}", file=file) from e
    fields = list(table.column_names)
    shape = choose_shape(fields, file)
    for key in (shape.prompt_key, shape.extra_key, shape.reference_key):
        if key is not None:
            _check_column_type(table.schema.field(_original(fields, key)), shape.family == "messages", file)
    rows = [(row, i) for i, row in enumerate(table.to_pylist(), 1)]
    return rows, fields, shape


def _check_column_type(field: Any, is_messages: bool, file: str) -> None:
    import pyarrow as pa

    t = field.type
    if is_messages:
        ok = (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_struct(t.value_type) and all(
            t.value_type.get_field_index(n) >= 0 and _is_stringish(t.value_type.field(n).type)
            for n in ("role", "content"))
        want = "list<struct<role: string, content: string>>"
    else:
        ok, want = _is_stringish(t), "string"
    if not ok:
        raise DatasetError(f"column has type {t}; expected {want}", file=file, field=field.name)


def _is_stringish(t: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t) or (
        hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t))


# ---------------------------------------------------------------- raw rows -> records

def _original(fields: list[str], key: str) -> str:
    """The file's spelling of a case-insensitive key."""
    return next(f for f in fields if f.strip().lower() == key)


def union_fields(rows: list[tuple[dict, int]]) -> list[str]:
    """Keys across all rows, first-seen order."""
    seen: dict[str, None] = {}
    for row, _ in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def choose_shape(fields: list[str], file: str, line: int | None = None) -> Shape:
    """The highest-priority family whose prompt key the file has (keys match case-insensitively)."""
    keys = {f.strip().lower() for f in fields}
    for family, prompt_key, extras, refs in _FAMILIES:
        if prompt_key in keys:
            extra = next((k for k in extras if k in keys), None)
            ref = next((k for k in refs if k in keys), None)
            return Shape(family, prompt_key, extra, ref)
    raise DatasetError(f"no prompt field: found {sorted(fields)}; accepted: {', '.join(ACCEPTED_PROMPT_FIELDS)}",
                       file=file, line=line, field="prompt")


def parse_row(row: dict, line: int, shape: Shape, file: str) -> ParsedRow:
    """Validate one row against the file's shape."""
    lower = {k.strip().lower(): v for k, v in row.items()}
    if shape.prompt_key not in lower:
        raise DatasetError(f"no '{shape.prompt_key}' field (this file's rows are {shape.name}); "
                           f"found {sorted(row)}", file=file, line=line, field=shape.prompt_key)
    if shape.family == "messages":
        messages, reference = _parse_messages(lower["messages"], line, file)
        return ParsedRow(None, messages, reference, line)
    prompt = _text(lower, shape.prompt_key, line, file, required=True)
    if shape.extra_key and (extra := _text(lower, shape.extra_key, line, file, required=False)):
        prompt = f"{prompt}\n\n{extra}"
    reference = _text(lower, shape.reference_key, line, file, required=False) if shape.reference_key else None
    return ParsedRow(prompt, None, reference or None, line)


def _text(row: dict, key: str, line: int, file: str, *, required: bool) -> str | None:
    """A stripped string field; optional fields may be absent, null or empty."""
    value = row.get(key)
    if value is None:
        if required:
            raise DatasetError(f"{key} is {'null' if key in row else 'missing'}", file=file, line=line, field=key)
        return None
    if not isinstance(value, str):
        raise DatasetError(f"{key} must be a string, got {_type(value)} ({_short(value)})",
                           file=file, line=line, field=key)
    if required and not value.strip():
        raise DatasetError(f"{key} is empty", file=file, line=line, field=key)
    return value.strip()


def _parse_messages(value: Any, line: int, file: str) -> tuple[tuple[dict, ...], str | None]:
    """Prompt = turns up to the last user turn; one assistant turn after it is the reference."""
    if not isinstance(value, list) or not value:
        raise DatasetError(f"messages must be a non-empty list of {{role, content}}, got {_short(value)}",
                           file=file, line=line, field="messages")
    turns = [_parse_turn(m, i, line, file) for i, m in enumerate(value)]
    last_user = max((i for i, t in enumerate(turns) if t["role"] == "user"), default=None)
    if last_user is None:
        raise DatasetError("messages has no user turn", file=file, line=line, field="messages")
    if not turns[last_user]["content"].strip():
        raise DatasetError("the last user turn is empty", file=file, line=line,
                           field=f"messages[{last_user}].content")
    tail = turns[last_user + 1:]
    if len(tail) > 1 or (tail and tail[0]["role"] != "assistant"):
        raise DatasetError("after the last user turn only one assistant turn (the reference) may follow",
                           file=file, line=line, field="messages")
    reference = tail[0]["content"].strip() if tail else None
    return tuple(turns[:last_user + 1]), reference or None


def _parse_turn(m: Any, i: int, line: int, file: str) -> dict:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise DatasetError(f"a turn must be an object {{role, content}}, got {_type(m)}",
                           file=file, line=line, field=where)
    role, content = m.get("role"), m.get("content")
    if role not in CHAT_ROLES:
        raise DatasetError(f"role must be one of {', '.join(CHAT_ROLES)}, got {_short(role)}",
                           file=file, line=line, field=f"{where}.role")
    if not isinstance(content, str):
        raise DatasetError(f"content must be a string, got {_type(content)}",
                           file=file, line=line, field=f"{where}.content")
    return {"role": role, "content": content}


def _type(v: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), type(v).__name__)


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."
