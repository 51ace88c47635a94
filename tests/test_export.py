"""Exports hold the full history (row counts equal the database's), bundles hold everything, paths stay put."""

from __future__ import annotations

import csv
import json
import math
import zipfile

import pandas as pd
import pyarrow.parquet as pq
import pytest

from minillm_dash.db import Database
from minillm_dash.errors import UserInputError
from minillm_dash.export import export_bundle, export_history, safe_export_path

STEPS = 1500  # more than any chart would show: the export must not downsample


@pytest.fixture
def storage(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLM_DASH_STORAGE", str(tmp_path / "storage"))
    return tmp_path / "storage"


@pytest.fixture
def filled(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'export.sqlite'}")
    exp = db.create_experiment("compare", {"steps": STEPS})
    runs = [db.create_run(exp, variant, seed, {"variant": variant, "lr": 1e-4}, STEPS)
            for variant, seed in (("minillm", 0), ("minillm", 1), ("fkl", 0))]
    for rid in runs:
        rows = [(rid, s, n, s * 0.01 + i, 100.0 + s) for s in range(STEPS) for i, n in enumerate(("loss", "kl"))]
        rows.append((rid, STEPS, "loss", math.nan, 200.0))
        rows.append((rid, STEPS, "kl", math.inf, 200.0))
        db.insert_metrics(rows)
        db.add_samples(rid, 10, [{"prompt": "p, with comma", "text": "line1\nline2", "reference": None}])
        db.add_event(rid, "done", "finished")
    other_exp = db.create_experiment("other", {})
    other = db.create_run(other_exp, "rkl", 0, {}, 10)
    db.insert_metrics([(other, 1, "loss", 1.0, 1.0)])
    yield db, exp, runs
    db.close()


def test_csv_has_every_row(filled, tmp_path):
    db, exp, runs = filled
    path = export_history(db, runs[:2], "csv", tmp_path / "out" / "h.csv")
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    expected = db.count_metrics(runs[:2])
    print(f"\ncsv: {len(rows)} rows exported, {expected} in the database")
    assert len(rows) == expected == 2 * (2 * STEPS + 2)
    assert set(rows[0]) == {"run_id", "experiment_id", "variant", "seed", "step", "name", "value", "wall_time"}
    assert {r["variant"] for r in rows} == {"minillm"} and {r["seed"] for r in rows} == {"0", "1"}
    assert {r["experiment_id"] for r in rows} == {str(exp)}
    frame = pd.read_csv(path)
    last = frame[frame.step == STEPS].set_index(["run_id", "name"]).value
    assert math.isnan(last[(runs[0], "loss")]) and last[(runs[0], "kl")] == math.inf


def test_json_has_every_row_and_configs(filled, tmp_path):
    db, _exp, runs = filled
    path = export_history(db, runs, "json", tmp_path / "h.json")
    doc = json.loads(path.read_text())  # strict JSON: would fail on bare NaN
    assert len(doc["metrics"]) == db.count_metrics(runs)
    assert [r["id"] for r in doc["runs"]] == runs
    assert doc["runs"][2]["config"] == {"variant": "fkl", "lr": 1e-4}
    values = {(m["run_id"], m["name"]): m["value"] for m in doc["metrics"] if m["step"] == STEPS}
    assert values[(runs[0], "loss")] == "NaN" and float(values[(runs[0], "kl")]) == math.inf
    print(f"\njson: {len(doc['metrics'])} rows exported, {db.count_metrics(runs)} in the database")


def test_parquet_has_every_row(filled, tmp_path):
    db, _exp, runs = filled
    path = export_history(db, runs, "parquet", tmp_path / "h.parquet")
    table = pq.read_table(path)
    assert table.num_rows == db.count_metrics(runs)
    assert table.schema.field("value").type == "double" and table.schema.field("step").type == "int64"
    meta = json.loads(table.schema.metadata[b"minillm_dash.runs"])
    assert [r["id"] for r in meta] == runs and meta[0]["config"]["variant"] == "minillm"
    frame = table.to_pandas()
    assert frame.value.isna().sum() == len(runs) and (frame.value == math.inf).sum() == len(runs)
    print(f"\nparquet: {table.num_rows} rows exported, {db.count_metrics(runs)} in the database")


def test_bad_format_and_unknown_run(filled, tmp_path):
    db, _exp, runs = filled
    with pytest.raises(UserInputError, match="format"):
        export_history(db, runs, "xlsx", tmp_path / "x.xlsx")
    with pytest.raises(UserInputError, match="no run with id 999"):
        export_history(db, [999], "csv", tmp_path / "x.csv")


def test_bundle_contents(filled, storage):
    db, exp, runs = filled
    html = "<html><body>chart</body></html>"
    dest = export_bundle(db, safe_export_path("exp 1 bundle.zip"), experiment_id=exp,
                         extra_files={"charts/loss.html": html, "raw.bin": b"\x00\x01"})
    assert dest.parent == (storage / "exports").resolve()
    with zipfile.ZipFile(dest) as zf:
        assert set(zf.namelist()) == {"configs.json", "metrics.csv", "samples.csv", "events.csv",
                                      "charts/loss.html", "raw.bin"}
        configs = json.loads(zf.read("configs.json"))
        metrics = list(csv.DictReader(zf.read("metrics.csv").decode().splitlines()))
        samples = list(csv.DictReader(zf.read("samples.csv").decode().splitlines(keepends=True)))
        events = list(csv.DictReader(zf.read("events.csv").decode().splitlines()))
        assert zf.read("charts/loss.html").decode() == html and zf.read("raw.bin") == b"\x00\x01"
    assert [r["id"] for r in configs["runs"]] == runs and configs["experiments"][0]["name"] == "compare"
    assert len(metrics) == db.count_metrics(runs)  # other experiment's run not included
    assert len(samples) == 3 and samples[0]["text"] == "line1\nline2" and samples[0]["prompt"] == "p, with comma"
    assert len(events) == 3 and events[0]["kind"] == "done"
    print(f"\nbundle: {len(metrics)} metric rows, {len(samples)} samples, {len(events)} events")

    by_runs = export_bundle(db, safe_export_path("two.zip"), run_ids=runs[:1])
    with zipfile.ZipFile(by_runs) as zf:
        assert len(zf.read("metrics.csv").decode().splitlines()) == 1 + db.count_metrics(runs[:1])


def test_bundle_refuses_escaping_member_names(filled, storage):
    db, exp, _runs = filled
    for bad in ("../evil.html", "/etc/passwd", "a/../../b", "metrics.csv", "C:evil"):
        with pytest.raises(UserInputError):
            export_bundle(db, safe_export_path("x.zip"), experiment_id=exp, extra_files={bad: "x"})
    with pytest.raises(TypeError):
        export_bundle(db, safe_export_path("x.zip"))
    with pytest.raises(UserInputError):
        export_bundle(db, safe_export_path("x.zip"), experiment_id=12345)


@pytest.mark.parametrize("bad", ["", "  ", ".", "..", "../x.csv", "a/b.csv", "a\\b.csv", "/tmp/x.csv",
                                 "..\\..\\x.csv", ".hidden", "x\x00.csv"])
def test_safe_export_path_refuses_escapes(storage, bad):
    with pytest.raises(UserInputError):
        safe_export_path(bad)


def test_safe_export_path_sanitises_and_stays_inside(storage):
    p = safe_export_path("run 3: loss*?.csv")
    assert p.parent == (storage / "exports").resolve() and p.name == "run 3_ loss__.csv"
    assert safe_export_path("history.parquet").name == "history.parquet"
    assert len(safe_export_path("a" * 500).name) <= 150
