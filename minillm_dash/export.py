"""Exports of the FULL metric history (never the downsampled chart view): CSV, JSON, Parquet, zip bundle.

Long format, one row per (run, metric, step), with the columns a reader needs to group without a
join: run_id, experiment_id, variant, seed, step, name, value, wall_time. Non-finite values:
CSV writes nan/inf/-inf (what float() and pandas read back); Parquet stores real NaN/inf; JSON
stays strict (browsers reject bare NaN) by writing "NaN", "Infinity", "-Infinity" as strings,
which float() also parses.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from minillm_dash import paths
from minillm_dash.db import Database
from minillm_dash.errors import UserInputError

log = logging.getLogger(__name__)

FORMATS = ("csv", "json", "parquet")
METRIC_COLUMNS = ("run_id", "experiment_id", "variant", "seed", "step", "name", "value", "wall_time")
SAMPLE_COLUMNS = ("run_id", "step", "idx", "prompt", "text", "reference")
EVENT_COLUMNS = ("run_id", "time", "kind", "message")
BUNDLE_RESERVED = ("configs.json", "metrics.csv", "samples.csv", "events.csv")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._ -]")
_MAX_NAME = 150


# ---------------------------------------------------------------------- paths
def exports_dir() -> Path:
    """storage/exports (created on demand)."""
    folder = paths.storage_dir() / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def safe_export_path(name: str) -> Path:
    """A file directly inside storage/exports for a user- or UI-chosen name.

    Refused (UserInputError): empty names, '.'/'..', absolute paths, any path separator, names
    starting with a dot. Other odd characters become '_'. The result is checked to resolve inside
    the exports folder, so no name can write elsewhere.
    """
    raw = str(name)
    if not raw.strip():
        raise UserInputError("export file name is empty")
    if "/" in raw or "\\" in raw or "\x00" in raw or Path(raw).is_absolute() or PurePosixPath(raw).is_absolute():
        raise UserInputError(f"export file name {raw!r} must be a plain file name, without folders")
    if raw.strip() in (".", "..") or raw.startswith("."):
        raise UserInputError(f"export file name {raw!r} is not allowed")
    clean = _UNSAFE_CHARS.sub("_", raw.strip())[:_MAX_NAME]
    folder = exports_dir().resolve()
    target = (folder / clean).resolve()
    if target.parent != folder:
        raise UserInputError(f"export file name {raw!r} escapes the exports folder")
    return target


def _bundle_member_name(name: str) -> str:
    """Extra files of a bundle: relative POSIX paths only (sub-folders allowed, no '..')."""
    p = PurePosixPath(str(name).replace("\\", "/"))
    if not p.parts or p.is_absolute() or any(part in ("", ".", "..") for part in p.parts) or ":" in p.parts[0]:
        raise UserInputError(f"bundle file name {name!r} must be a relative path without '..'")
    if str(p) in BUNDLE_RESERVED:
        raise UserInputError(f"bundle file name {name!r} is reserved")
    return str(p)


# ---------------------------------------------------------------------- data gathering
def _runs(db: Database, run_ids: Iterable[int]) -> list[dict[str, Any]]:
    """The runs, in the order given; an unknown id is the user's mistake."""
    runs = []
    for rid in dict.fromkeys(int(r) for r in run_ids):
        run = db.get_run(rid)
        if run is None:
            raise UserInputError(f"no run with id {rid}")
        runs.append(run)
    if not runs:
        raise UserInputError("nothing to export: no runs selected")
    return runs


def _metric_records(db: Database, runs: Sequence[Mapping[str, Any]]) -> list[tuple]:
    """Every stored metric row of these runs, with the run's grouping columns, in METRIC_COLUMNS order."""
    by_id = {r["id"]: r for r in runs}
    out = []
    for run_id, step, name, value, wall in db.metric_rows(list(by_id)):
        run = by_id[run_id]
        out.append((run_id, run["experiment_id"], run["variant"], run["seed"], step, name, value, wall))
    return out


def _json_number(value: float) -> float | str:
    """Strict JSON for non-finite floats (see module doc)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


# ---------------------------------------------------------------------- writers
def _write_csv(stream: io.TextIOBase, columns: Sequence[str], records: Iterable[Sequence[Any]]) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(records)


def _metrics_csv_text(records: list[tuple]) -> str:
    buf = io.StringIO()
    _write_csv(buf, METRIC_COLUMNS, records)
    return buf.getvalue()


def _write_json(dest: Path, runs: list[dict[str, Any]], records: list[tuple]) -> None:
    doc = {
        "format": "minillm-dash-history",
        "version": 1,
        "columns": list(METRIC_COLUMNS),
        "runs": [dict(r) for r in runs],
        "metrics": [
            dict(zip(METRIC_COLUMNS, (*rec[:6], _json_number(rec[6]), rec[7]))) for rec in records
        ],
    }
    with dest.open("w", encoding="utf-8") as fh:
        json.dump(doc, fh, allow_nan=False, default=str)


def _write_parquet(dest: Path, runs: list[dict[str, Any]], records: list[tuple]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(zip(*records)) if records else [[] for _ in METRIC_COLUMNS]
    types = [pa.int64(), pa.int64(), pa.string(), pa.int64(), pa.int64(), pa.string(), pa.float64(), pa.float64()]
    table = pa.table({name: pa.array(col, type=t) for name, col, t in zip(METRIC_COLUMNS, columns, types)})
    meta = {b"minillm_dash.runs": json.dumps([dict(r) for r in runs], default=str).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    pq.write_table(table, dest)


def export_history(db: Database, run_ids: Iterable[int], fmt: str, dest_path: str | Path) -> Path:
    """Write every metric row of these runs to dest_path as csv, json or parquet; returns the path.

    JSON also carries each run's full record (config included); Parquet carries it in the file's
    metadata key 'minillm_dash.runs'.
    """
    fmt = str(fmt).lower().lstrip(".")
    if fmt not in FORMATS:
        raise UserInputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    runs = _runs(db, run_ids)
    records = _metric_records(db, runs)
    dest = Path(dest_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        with dest.open("w", encoding="utf-8", newline="") as fh:
            _write_csv(fh, METRIC_COLUMNS, records)
    elif fmt == "json":
        _write_json(dest, runs, records)
    else:
        _write_parquet(dest, runs, records)
    log.info("exported %d metric rows of %d run(s) to %s", len(records), len(runs), dest)
    return dest


def export_bundle(
    db: Database,
    dest_zip: str | Path,
    *,
    experiment_id: int | None = None,
    run_ids: Iterable[int] | None = None,
    extra_files: Mapping[str, bytes | str] | None = None,
) -> Path:
    """A zip with configs.json (experiments + runs with configs), metrics.csv (full history),
    samples.csv, events.csv and the extra files (e.g. the charts as standalone HTML).

    Select with experiment_id (all its runs) or run_ids; returns the zip path.
    """
    if (experiment_id is None) == (run_ids is None):
        raise TypeError("export_bundle needs exactly one of experiment_id= or run_ids=")
    if experiment_id is not None:
        if db.get_experiment(experiment_id) is None:
            raise UserInputError(f"no experiment with id {experiment_id}")
        run_ids = [r["id"] for r in db.list_runs(experiment_id)]
    runs = _runs(db, run_ids or [])
    extras = {_bundle_member_name(k): v for k, v in (extra_files or {}).items()}
    members = {
        "configs.json": _configs_json(db, runs),
        "metrics.csv": _metrics_csv_text(_metric_records(db, runs)),
        "samples.csv": _table_csv(SAMPLE_COLUMNS, (s for r in runs for s in db.samples(r["id"]))),
        "events.csv": _table_csv(EVENT_COLUMNS, (e for r in runs for e in db.events(r["id"]))),
        **extras,
    }
    dest = Path(dest_zip)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for member, content in members.items():
            zf.writestr(member, content.encode("utf-8") if isinstance(content, str) else bytes(content))
    log.info("exported bundle of %d run(s) to %s", len(runs), dest)
    return dest


def _configs_json(db: Database, runs: list[dict[str, Any]]) -> str:
    exp_ids = list(dict.fromkeys(r["experiment_id"] for r in runs))
    experiments = [e for e in (db.get_experiment(i) for i in exp_ids) if e is not None]
    return json.dumps({"experiments": experiments, "runs": [dict(r) for r in runs]},
                      indent=2, default=str)


def _table_csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    _write_csv(buf, columns, ([row.get(c) for c in columns] for row in rows))
    return buf.getvalue()
