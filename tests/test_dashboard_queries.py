"""Dashboard helpers: incremental cache, runs table, per-variant summaries, config diff."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from minillm_dash import dashboard_queries as Q
from minillm_dash.plots import RunSeries


def test_area_under_curve_is_trapezoid_over_steps():
    assert Q.area_under_curve([0, 1, 3], [2.0, 4.0, 0.0]) == pytest.approx(3.0 + 4.0)
    assert Q.area_under_curve([0, 10], [1.0, 1.0]) == pytest.approx(10.0)
    assert Q.area_under_curve([5], [1.0]) is None
    assert Q.area_under_curve([0, 1, 2], [1.0, float("nan"), 1.0]) == pytest.approx(2.0)


def test_steps_to_threshold():
    steps, vals = [10, 20, 30, 40], [5.0, 3.0, 1.9, 1.0]
    assert Q.steps_to_threshold(steps, vals, 2.0) == 30
    assert Q.steps_to_threshold(steps, vals, 0.5) is None
    assert Q.steps_to_threshold(steps, [0.1, 0.2, 0.5, 0.4], 0.45, lower_is_better=False) == 30


def test_variant_summary_over_seeds():
    a = RunSeries(1, "minillm", 0, [0, 10, 20], [4.0, 2.0, 1.0])
    b = RunSeries(2, "minillm", 1, [0, 10, 20], [4.0, 3.0, 3.0])
    c = RunSeries(3, "rkl", 0, [0, 10, 20], [5.0, 4.0, 2.5])
    rows = {r[0]: r for r in Q.variant_summary_rows([a, b, c], threshold=2.0)}
    assert rows["minillm"][1] == 2
    assert rows["minillm"][2] == f"{2.0:.4g} ± {np.std([1.0, 3.0], ddof=1):.2g}"  # final
    assert rows["minillm"][4] == "10" and rows["minillm"][5] == "1/2"  # only seed 0 reaches 2.0 (at step 10)
    assert rows["rkl"][4] == "" and rows["rkl"][5] == "0/1"
    # AUC of a: 10*(4+2)/2 + 10*(2+1)/2 = 45; b: 35 + 30 = 65 -> 55 ± 14
    assert rows["minillm"][6].startswith("55 ±")


def test_config_diff_shows_only_differences_and_nested_keys():
    c1 = {"variant": {"name": "minillm", "single": "unweighted", "mix_alpha": 0.2}, "seed": 0, "lr": 5e-5}
    c2 = {"variant": {"name": "minillm_wsingle", "single": "weighted", "mix_alpha": 0.2}, "seed": 0, "lr": 5e-5,
          "extra": [1, 2]}
    headers, rows = Q.config_diff({"run 1": c1, "run 2": c2})
    assert headers == ["setting", "run 1", "run 2"]
    assert [r[0] for r in rows] == ["extra", "variant.name", "variant.single"]
    assert rows[0][1] == "—" and rows[2][1:] == ["unweighted", "weighted"]
    _, single = Q.config_diff({"run 1": c1})
    assert len(single) == 5  # one config: everything, as a viewer


class FakeDb:
    """Just the metric table, with db.metric_rows' semantics."""

    def __init__(self):
        self.rows = []

    def metric_rows(self, run_ids, names=None, after_step=None):
        after = after_step or {}
        return [r for r in self.rows if r[0] in run_ids and (names is None or r[2] in names)
                and r[1] > after.get(r[0], -1)]

    def max_steps(self, run_ids):
        out = {}
        for r in self.rows:
            if r[0] in run_ids:
                out[r[0]] = max(out.get(r[0], -1), r[1])
        return out


def sync(cache, db, wanted, finished=()):
    """What the Live tab does each tick; returns (queries made, metrics changed)."""
    max_steps = db.max_steps([1, 2])
    plan = cache.plan_queries(max_steps, wanted, finished)
    changed = set()
    for rid, names, after in plan:
        changed |= cache.add_rows(db.metric_rows([rid], names=names, after_step={rid: after}))
    for rid in {p[0] for p in plan}:
        cache.mark_queried(rid, wanted, max_steps[rid], rid in set(finished))
    return plan, changed


def test_metric_cache_fetches_only_wanted_new_rows():
    db, cache = FakeDb(), Q.MetricCache()
    db.rows += [(1, s, n, float(s), 100.0 + s) for s in (1, 2, 3) for n in ("loss/total", "train/klr", "time/step")]
    plan, changed = sync(cache, db, {"loss/total", "train/klr"})
    assert plan == [(1, ("loss/total", "train/klr"), -1)]
    assert changed == {"loss/total", "train/klr"} and cache.names() == ["loss/total", "train/klr"]
    assert sync(cache, db, {"loss/total", "train/klr"})[0] == []  # nothing new: no query at all
    # step 4 train rows arrive; step 3's eval arrives only after them (separate flush)
    db.rows += [(1, 4, "loss/total", 4.0, 104.0), (1, 4, "train/klr", 4.0, 104.0)]
    plan, _ = sync(cache, db, {"loss/total", "train/klr", "eval/klr"})
    assert plan == [(1, ("eval/klr",), -1), (1, ("loss/total", "train/klr"), 3)]
    db.rows += [(1, 3, "eval/klr", 0.5, 103.5)]
    assert sync(cache, db, {"loss/total", "train/klr", "eval/klr"})[0] == []  # max step unchanged
    # the run finishes: one last query per finished run catches the late eval row
    plan, changed = sync(cache, db, {"loss/total", "train/klr", "eval/klr"}, finished=[1])
    assert changed == {"eval/klr"} and cache.last_value(1, "eval/klr") == pytest.approx(0.5)
    assert sync(cache, db, {"loss/total", "train/klr", "eval/klr"}, finished=[1])[0] == []
    # a metric ticked later is fetched from the start
    plan, changed = sync(cache, db, {"loss/total", "train/klr", "eval/klr", "time/step"}, finished=[1])
    assert plan == [(1, ("time/step",), -1)] and cache.get(1, "time/step").steps.tolist() == [1, 2, 3]


def test_metric_cache_appends_only_newer_rows():
    cache = Q.MetricCache()
    changed = cache.add_rows([(1, 1, "loss/total", 3.0, 100.0), (1, 2, "loss/total", 2.0, 101.0),
                              (1, 2, "train/klr", 1.5, 101.0), (1, 3, "loss/total", 1.0, 102.0)])
    assert changed == {"loss/total", "train/klr"}
    changed = cache.add_rows([(1, 3, "loss/total", 1.0, 102.0), (1, 3, "eval/klr", 0.9, 102.5),
                              (1, 4, "loss/total", 0.5, 103.0)])
    assert changed == {"loss/total", "eval/klr"}  # the repeated step-3 row was dropped
    assert cache.get(1, "loss/total").steps.tolist() == [1, 2, 3, 4]
    assert cache.version["loss/total"] == 4
    assert cache.rate(1) == pytest.approx(1.0)
    cache.forget_runs([])
    assert cache.names() == []


def test_wanted_metrics():
    w = Q.wanted_metrics(["train/klr"], "eval/klr", "tokens_seen")
    assert {"train/klr", "eval/klr", "loss/total", "train/tokens_seen"} <= w


def test_run_series_maps_wall_time_and_tokens_seen():
    cache = Q.MetricCache()
    cache.add_rows([(7, s, "train/klr", 1.0 / s, 50.0 + 2 * s) for s in range(1, 5)])
    cache.add_rows([(7, s, "train/tokens_seen", 100.0 * s, 50.0 + 2 * s) for s in range(1, 5)])
    runs = [{"id": 7, "variant": "rkl", "seed": 1}]
    (by_step,) = Q.run_series(cache, runs, "train/klr", "step")
    assert by_step.x is None and by_step.seed == 1
    (by_wall,) = Q.run_series(cache, runs, "train/klr", "wall_time")
    assert by_wall.x.tolist() == [0.0, 2.0, 4.0, 6.0]
    (by_tok,) = Q.run_series(cache, runs, "train/klr", "tokens_seen")
    assert by_tok.x.tolist() == [100.0, 200.0, 300.0, 400.0]
    assert Q.run_series(cache, runs, "eval/klr", "step") == []


def test_runs_table_rows_eta_and_formats():
    cache = Q.MetricCache()
    cache.add_rows([(1, s, "loss/total", 2.0, 1000.0 + s * 0.5) for s in range(1, 11)])  # 2 steps/s
    start = dt.datetime.fromtimestamp(995.0, tz=dt.timezone.utc).replace(tzinfo=None)
    runs = [{"id": 1, "variant": "minillm", "seed": 0, "status": "running", "step": 9, "total_steps": 100,
             "started_at": start}]
    (row,) = Q.runs_table_rows(runs, cache, now=1010.0, max_steps={1: 10})
    assert row[:8] == [1, "minillm", 0, "running", "10 / 100", "2.00", "15s", "45s"]
    assert row[8] == "2"  # last loss/total
    done = [{**runs[0], "status": "done", "finished_at": 1005.0}]
    (row,) = Q.runs_table_rows(done, cache, now=2000.0)
    assert row[6] == "10s" and row[7] == ""


def test_small_formatters():
    assert Q.fmt_duration(5) == "5s" and Q.fmt_duration(185) == "3m05s" and Q.fmt_duration(3720) == "1h02m"
    assert Q.fmt_duration(None) == ""
    assert Q.eta_seconds(10, 100, 0.0) is None and Q.eta_seconds(10, 100, 3.0) == pytest.approx(30.0)
    assert Q.to_epoch("1970-01-01T00:01:00") == 60.0
    assert Q.metric_group("loss/ce") == "loss" and Q.metric_group("eval/nll") == "yardstick"
    assert Q.metric_group("train/klr") == "yardstick" and Q.metric_group("train/grad_norm") == "diagnostic"
    g = Q.group_metrics(["train/grad_norm", "eval/klr", "train/klr", "loss/total", "zzz/custom"])
    assert g == {"loss": ["loss/total"], "yardstick": ["train/klr", "eval/klr"],
                 "diagnostic": ["train/grad_norm", "zzz/custom"]}


def test_samples_side_by_side_picks_a_shared_prompt():
    s = {"run 1": [{"prompt": "A", "response": "a1", "step": 5}, {"prompt": "B", "response": "b1", "step": 5}],
         "run 2": [{"prompt": "B", "response": "b2", "step": 4}]}
    prompt, rows = Q.samples_side_by_side(s)
    assert prompt == "B" and rows == [["run 1 @ step 5", "b1"], ["run 2 @ step 4", "b2"]]
    assert Q.samples_side_by_side({}) == ("", [])


def test_live_figure_falls_back_to_step_when_tokens_seen_missing():
    cache = Q.MetricCache()
    cache.add_rows([(1, s, "train/klr", 1.0, 10.0 + s) for s in range(1, 4)])
    runs = [{"id": 1, "variant": "rkl", "seed": 0}]
    fig = Q.build_live_figure(cache, runs, "train/klr", x_axis="tokens_seen", smoothing=0.0, log_y=False,
                              show_seeds=False).to_plotly_json()
    assert fig["layout"]["xaxis"]["title"]["text"] == "step"
    assert "not logged" in fig["layout"]["title"]["text"]


def test_group_rows_sorts_any_order_and_maps_none_to_nan():
    rows = [(2, 3, "b", 1.0, 10.0), (1, 2, "a", None, 11.0), (1, 1, "a", 5.0, 9.0), (2, 1, "b", 2.0, 8.0),
            (1, 1, "b", 7.0, 5.0)]
    g = Q.group_rows(rows)
    assert sorted(g) == [(1, "a"), (1, "b"), (2, "b")]
    steps, values, walls = g[(1, "a")]
    assert steps.tolist() == [1, 2] and values[0] == 5.0 and np.isnan(values[1]) and walls.tolist() == [9.0, 11.0]
    assert g[(2, "b")][0].tolist() == [1, 3]
    assert Q.group_rows([]) == {}
    g = Q.group_rows([(1, 1, "b", 7.0, dt.datetime(1970, 1, 1, 0, 0, 5))])  # a backend giving datetimes
    assert g[(1, "b")][2].tolist() == [5.0]
