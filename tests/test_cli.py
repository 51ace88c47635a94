"""The command line end to end on tiny models and a real SQLite file: run, list, export, refusals."""

import csv
import json

import pytest

from minillm_dash.cli import main
from minillm_dash.db import Database


def _db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'cli.sqlite'}"


def _run(tmp_path, *extra):
    return main(["--db", _db_url(tmp_path), "run", "--teacher", "tiny", "--student", "pruned:2", "--steps", "2",
                 "--batch-size", "2", "--max-new-tokens", "4", "--max-prompt-tokens", "32", "--eval-every", "2",
                 "--heldout-size", "2", "--quiet", *extra])


def test_finished_students_can_be_saved_and_loaded_back(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_DASH_MODELS", str(tmp_path / "models"))
    assert _run(tmp_path, "--variants", "rkl", "--save-students") == 0
    run = Database(_db_url(tmp_path)).list_runs()[0]
    saved = [e for e in Database(_db_url(tmp_path)).events(run["id"]) if e["kind"] == "saved"]
    folder = saved[0]["message"].removeprefix("student saved to ")
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(folder).config.num_hidden_layers == 2


def test_run_list_export(tmp_path, capsys):
    data = tmp_path / "prompts.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"Count to {i}.", "response": " ".join(map(str, range(i)))})
                              for i in range(1, 9)))
    assert _run(tmp_path, "--variants", "minillm,minillm_wsingle", "--data", str(data)) == 0
    out = capsys.readouterr().out
    assert out.count(": done") == 2
    db = Database(_db_url(tmp_path))
    runs = db.list_runs()
    assert len(runs) == 2 and len(db.list_datasets()) == 1
    assert main(["--db", _db_url(tmp_path), "list"]) == 0
    assert "minillm_wsingle" in capsys.readouterr().out
    dest = tmp_path / "history.csv"
    assert main(["--db", _db_url(tmp_path), "export", "--experiment", str(runs[0]["experiment_id"]),
                 "--out", str(dest)]) == 0
    with dest.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == db.count_metrics([r["id"] for r in runs]) > 0


@pytest.mark.parametrize("args, message", [
    (["--variants", "minilm"], "unknown preset 'minilm'"),
    (["--variants", "minillm", "--lr", "0"], "lr"),
    (["--variants", "rkl", "--seeds", "a,b"], "--seeds"),
])
def test_refusals_exit_2_with_the_reason_on_stderr(tmp_path, capsys, args, message):
    assert _run(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert Database(_db_url(tmp_path)).list_runs() == []


def test_a_bad_dataset_is_refused_before_models_load(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": ""}\n')
    assert _run(tmp_path, "--variants", "rkl", "--data", str(bad), "--teacher", "someorg/unreachable") == 2
    err = capsys.readouterr().err
    assert "bad.jsonl, line 2, field 'prompt'" in err
    db = Database(_db_url(tmp_path))
    assert db.list_datasets() == [] and db.list_runs() == []


def test_export_of_a_missing_run_is_refused(tmp_path, capsys):
    assert main(["--db", _db_url(tmp_path), "export", "--run", "42", "--out", str(tmp_path / "x.csv")]) == 2
    assert "no run with id 42" in capsys.readouterr().err
