"""Dashboard wiring without a browser: form parsing, the Live refresh's incremental/idle logic,
exports' chart files, and app.py's refusal to serve the network without a password."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import gradio as gr
import pytest

from minillm_dash.errors import ConfigError
from minillm_dash.ui_launch import HP_ORDER, experiment_from_inputs, parse_seeds, variant_from_switches

REPO = Path(__file__).resolve().parents[2]
HP = [20, 4, 5e-5, "constant", 0, 1.0, 32, 128, 10, 8, 32, 1, False]


def test_parse_seeds():
    assert parse_seeds("0, 1, 2") == (0, 1, 2)
    assert parse_seeds("3 5") == (3, 5)
    assert parse_seeds("0-3") == (0, 1, 2, 3)
    with pytest.raises(ConfigError, match="seeds"):
        parse_seeds("zero")
    with pytest.raises(ConfigError, match="seeds"):
        parse_seeds(" ")


def test_experiment_from_inputs_builds_and_validates():
    assert len(HP) == len(HP_ORDER)
    exp = experiment_from_inputs("wt", None, "tiny", "pruned:2", "auto", ["minillm", "minillm_wsingle"], [],
                                 "0,1,2", HP)
    assert [v.name for v in exp.variants] == ["minillm", "minillm_wsingle"]
    assert exp.seeds == (0, 1, 2) and exp.train.device is None and exp.train.steps == 20
    assert exp.train.yardstick_every == 1 and exp.train.save_students is False
    assert exp.trust_remote_code is False
    assert experiment_from_inputs("wt", None, "tiny", "pruned:2", "auto", ["rkl"], [], "0", HP,
                                  trust_remote_code=True).trust_remote_code is True
    with pytest.raises(ConfigError, match="variants"):
        experiment_from_inputs("x", None, "tiny", "pruned:2", "auto", [], [], "0", HP)
    bad = list(HP)
    bad[0] = 2.5
    with pytest.raises(ConfigError, match="steps"):
        experiment_from_inputs("x", None, "tiny", "pruned:2", "auto", ["rkl"], [], "0", bad)


def _switches(**over):
    base = dict(source="student", mix_alpha=0.2, gkd_on=False, gkd=0.5, divergence="jsd", divergence_coef=1.0, ce_coef=0.0,
                loss_temperature=1.0, beta=0.3, skew_alpha=0.1, mu=0.5, single="off", long_term=False,
                include_current=True, gamma=0.95, length_norm=True, whiten=True, clip=0.2, lm_coef=0.0)
    base.update(over)
    return list(base.values())


def test_custom_variant_from_switches():
    v = variant_from_switches("jsd03", _switches())
    assert v.divergence == "jsd" and v.beta == 0.3 and v.gkd_student_prob is None
    with pytest.raises(ConfigError, match="beta"):
        variant_from_switches("bad", _switches(beta=1.5))
    with pytest.raises(ConfigError, match="source"):  # MiniLLM terms need sampled sequences
        variant_from_switches("bad", _switches(source="reference", single="weighted"))
    with pytest.raises(ConfigError, match="mix_alpha"):
        variant_from_switches("bad", _switches(mix_alpha=None))
    assert variant_from_switches("gkd2", _switches(gkd_on=True, gkd=0.3)).gkd_student_prob == 0.3


class _IdleRunner:
    max_concurrent = 2

    def cancel(self, run_id):
        return False


def test_live_refresh_fetches_only_new_rows_and_idles(tmp_db):
    from minillm_dash.ui_common import UIContext
    from minillm_dash.ui_live import MAX_CHARTS, LiveTab

    exp = tmp_db.create_experiment("e", {})
    rid = tmp_db.create_run(exp, "rkl", 0, {}, 10)
    tmp_db.update_run(rid, status="running", started_at=time.time())
    tmp_db.insert_metrics([(rid, s, "train/klr", 1.0 / s, 1000.0 + s) for s in range(1, 6)])
    with gr.Blocks():
        live = LiveTab(UIContext(tmp_db, _IdleRunner(), 1024))
    args = [[], ["train/klr"], [], "step", 0.0, False, False, 0, "eval/klr"]
    out = live.refresh(None, exp, *args)
    state = out[0]
    plots = out[1:1 + MAX_CHARTS]
    assert plots[0]["value"] is not None and plots[0]["visible"] is True
    assert state.cache.get(rid, "train/klr").steps.tolist() == [1, 2, 3, 4, 5]
    # nothing new: the chart is skipped, not rebuilt
    out = live.refresh(state, exp, *args)
    assert out[1] == gr.skip()
    # new rows: only those are fetched and the chart is rebuilt
    tmp_db.insert_metrics([(rid, s, "train/klr", 1.0 / s, 1000.0 + s) for s in range(6, 8)])
    out = live.refresh(state, exp, *args)
    assert out[0].cache.get(rid, "train/klr").steps.tolist() == list(range(1, 8))
    assert out[1]["value"] is not None
    # the run ends: one more fetch (late rows of the last step), then the timer switches off
    tmp_db.update_run(rid, status="done", finished_at=time.time())
    out = live.refresh(state, exp, *args)
    assert out[-2] == gr.skip()
    out = live.refresh(state, exp, *args)
    timer = out[-2]
    assert isinstance(timer, gr.Timer) and timer.active is False


def test_bundle_chart_files_are_standalone_html(tmp_db):
    from minillm_dash.ui_common import UIContext
    from minillm_dash.ui_history import chart_html_files

    exp = tmp_db.create_experiment("e", {})
    rid = tmp_db.create_run(exp, "rkl", 0, {}, 10)
    tmp_db.insert_metrics([(rid, s, "train/klr", 1.0 / s, 1000.0 + s) for s in range(1, 6)])
    files = chart_html_files(UIContext(tmp_db, _IdleRunner(), 1024), [rid])
    assert list(files) == ["charts/train_klr.html"]
    html = files["charts/train_klr.html"]
    assert "<html>" in html and len(html) > 1_000_000  # plotly.js inlined: opens offline
    assert 'src="http' not in html


def test_app_refuses_network_bind_without_auth():
    proc = subprocess.run([sys.executable, str(REPO / "app.py"), "--host", "0.0.0.0"], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2
    assert "--auth" in proc.stderr


def test_app_exposure_rules():
    sys.path.insert(0, str(REPO))
    import app

    assert app.check_exposure("127.0.0.1", None) is None
    assert app.check_exposure("0.0.0.0", ("u", "p")) is None
    assert "refusing" in app.check_exposure("192.168.1.5", None)
    assert app.parse_auth("me:secret") == ("me", "secret")
    with pytest.raises(SystemExit):
        app.parse_auth("nopassword")


def test_app_never_prints_the_database_password():
    url = "postgresql+psycopg2://user:s3cret-pw@127.0.0.1:1/nowhere"
    proc = subprocess.run([sys.executable, str(REPO / "app.py"), "--db", url], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 2
    assert "s3cret-pw" not in proc.stdout + proc.stderr
    assert "user:***@127.0.0.1" in proc.stderr
