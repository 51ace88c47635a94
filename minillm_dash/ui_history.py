"""History and export tab: experiments and runs with configs, config diff, exports, deletion.

Exports always carry the full history from the database (never the downsampled view); the zip
bundle adds the charts as standalone HTML (plotly.js inlined, so they open offline).
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr
import pandas as pd

from minillm_dash import dashboard_queries as Q
from minillm_dash import export
from minillm_dash import variants as V
from minillm_dash.errors import ConfigError
from minillm_dash.ui_common import UIContext, experiment_choices, fmt_time, frame, run_label, user_errors

EXPERIMENT_HEADERS = ["id", "name", "runs", "created"]
RUN_HEADERS = ["id", "experiment", "variant", "what it computes", "models", "seed", "status", "step", "total",
               "started", "finished", "error"]
BUNDLE_CHART_METRICS = ("train/klr", "train/klf", "eval/klr", "eval/klf", "eval/nll", "eval/rouge_l", "loss/total")


def experiments_frame(ctx: UIContext) -> pd.DataFrame:
    return frame(EXPERIMENT_HEADERS, [[e["id"], e["name"], e.get("n_runs", 0), fmt_time(e.get("created_at"))]
                                      for e in reversed(ctx.db.list_experiments())])


def describe_config(config: dict | None) -> tuple[str, str]:
    """(what the variant computes, 'teacher -> student') from a stored run config."""
    config = config or {}
    variant = config.get("variant")
    what = ""
    if isinstance(variant, dict):
        try:
            what = V.describe(V.VariantConfig.from_dict(variant))
        except ConfigError as exc:  # a config written by another version: say so, do not hide it
            what = f"(unreadable variant config: {exc})"
    models = f"{config.get('teacher', '?')} → {config.get('student', '?')}" if config else ""
    return what, models


def runs_frame(ctx: UIContext) -> pd.DataFrame:
    rows = []
    for r in reversed(ctx.db.list_runs()):
        what, models = describe_config(r.get("config"))
        rows.append([r["id"], r["experiment_id"], r["variant"], what, models, r["seed"], r["status"], r["step"],
                     r["total_steps"], fmt_time(r.get("started_at")), fmt_time(r.get("finished_at")),
                     r.get("error") or ""])
    return frame(RUN_HEADERS, rows)


def run_choices(ctx: UIContext) -> list[tuple[str, int]]:
    return [(f"{run_label(r)} [exp #{r['experiment_id']}, {r['status']}]", int(r["id"]))
            for r in reversed(ctx.db.list_runs())]


def chart_html_files(ctx: UIContext, run_ids: list[int]) -> dict[str, str]:
    """Standalone HTML charts (plotly.js inlined) of the key metrics, for the zip bundle."""
    runs = [r for r in (ctx.db.get_run(i) for i in run_ids) if r is not None]
    cache = Q.MetricCache()
    cache.add_rows(ctx.db.metric_rows([int(r["id"]) for r in runs]))
    files = {}
    for metric in BUNDLE_CHART_METRICS:
        if not Q.run_series(cache, runs, metric, "step"):
            continue
        fig = Q.build_live_figure(cache, runs, metric, x_axis="step", smoothing=0.0, log_y=False, show_seeds=True,
                                  max_points=4000)
        files[f"charts/{metric.replace('/', '_')}.html"] = fig.to_html(include_plotlyjs=True, full_html=True)
    return files


def build_history_tab(ctx: UIContext) -> dict[str, Any]:
    c: dict[str, Any] = {}
    c["refresh"] = gr.Button("Refresh lists")
    c["experiments"] = gr.Dataframe(value=lambda: experiments_frame(ctx), label="Experiments", interactive=False)
    c["runs"] = gr.Dataframe(value=lambda: runs_frame(ctx), label="Runs", interactive=False, elem_id="history-runs")
    gr.Markdown("### Select")
    with gr.Row():
        c["exp_choice"] = gr.Dropdown(choices=experiment_choices(ctx.db), label="Experiment", scale=2,
                                      elem_id="history-experiment")
        c["run_choice"] = gr.Dropdown(choices=run_choices(ctx), multiselect=True, label="Runs", scale=3,
                                      elem_id="history-runs-choice")
    gr.Markdown("### Configs: several runs (or an experiment) show only the settings that differ; "
                "one run shows all of its settings")
    c["diff_btn"] = gr.Button("Show config diff", elem_id="config-diff-btn")
    c["diff"] = gr.Dataframe(value=frame(["setting"], []), interactive=False, wrap=True, elem_id="config-diff")
    gr.Markdown("### Export the full history")
    with gr.Row():
        c["fmt"] = gr.Radio(choices=list(export.FORMATS), value="csv", label="Format", elem_id="export-format")
        c["export_runs"] = gr.Button("Export selected runs", elem_id="export-runs")
        c["export_exp"] = gr.Button("Export experiment", elem_id="export-experiment")
        c["bundle"] = gr.Button("Zip bundle (configs, metrics, samples, charts)", elem_id="export-bundle")
    c["file"] = gr.File(label="Download", interactive=False, elem_id="export-file")
    gr.Markdown("### Delete")
    c["delete"] = gr.Button("Delete selected runs", variant="stop", elem_id="delete-runs")
    _wire(ctx, c)
    return c


def _selected(run_ids: list[int] | None) -> list[int]:
    if not run_ids:
        raise gr.Error("select one or more runs first")
    return [int(r) for r in run_ids]


def _wire(ctx: UIContext, c: dict[str, Any]) -> None:
    def refresh():
        return (experiments_frame(ctx), runs_frame(ctx), gr.update(choices=experiment_choices(ctx.db)),
                gr.update(choices=run_choices(ctx)))

    @user_errors
    def diff(run_ids: list[int] | None, experiment_id: int | None):
        ids = list(run_ids or [])
        if not ids and experiment_id is not None:
            ids = [int(r["id"]) for r in ctx.db.list_runs(int(experiment_id))]
        if not ids:
            raise gr.Error("select runs or an experiment to compare")
        configs = {}
        for rid in ids:
            run = ctx.db.get_run(int(rid))
            if run is None:
                raise gr.Error(f"run #{rid} no longer exists")
            configs[run_label(run)] = run.get("config") or {}
        headers, rows = Q.config_diff(configs)
        if not rows:
            gr.Info("the selected runs have identical configs")
        return frame(headers, rows)

    def _stamp() -> str:
        return time.strftime("%Y%m%d-%H%M%S")

    @user_errors
    def export_runs(run_ids: list[int] | None, fmt: str):
        ids = _selected(run_ids)
        name = f"runs-{'-'.join(map(str, ids[:8]))}{'-etc' if len(ids) > 8 else ''}-{_stamp()}.{fmt}"
        return str(export.export_history(ctx.db, ids, fmt, export.safe_export_path(name)))

    @user_errors
    def export_experiment(experiment_id: int | None, fmt: str):
        if experiment_id is None:
            raise gr.Error("select an experiment first")
        ids = [int(r["id"]) for r in ctx.db.list_runs(int(experiment_id))]
        if not ids:
            raise gr.Error(f"experiment #{experiment_id} has no runs")
        path = export.safe_export_path(f"experiment-{experiment_id}-{_stamp()}.{fmt}")
        return str(export.export_history(ctx.db, ids, fmt, path))

    @user_errors
    def bundle(run_ids: list[int] | None, experiment_id: int | None):
        if run_ids:
            ids = [int(r) for r in run_ids]
            path = export.safe_export_path(f"bundle-runs-{'-'.join(map(str, ids[:8]))}-{_stamp()}.zip")
            return str(export.export_bundle(ctx.db, path, run_ids=ids, extra_files=chart_html_files(ctx, ids)))
        if experiment_id is None:
            raise gr.Error("select runs or an experiment first")
        ids = [int(r["id"]) for r in ctx.db.list_runs(int(experiment_id))]
        path = export.safe_export_path(f"bundle-experiment-{experiment_id}-{_stamp()}.zip")
        return str(export.export_bundle(ctx.db, path, experiment_id=int(experiment_id),
                                        extra_files=chart_html_files(ctx, ids)))

    @user_errors
    def delete(run_ids: list[int] | None) -> None:
        ids = _selected(run_ids)
        for rid in ids:
            run = ctx.db.get_run(rid)
            if run is not None and run.get("status") in Q.ACTIVE_STATUSES:
                raise gr.Error(f"run #{rid} is {run['status']}: cancel it on the Live tab before deleting it")
        gone = [rid for rid in ids if ctx.db.delete_run(rid)]
        gr.Info(f"deleted {len(gone)} run(s): {', '.join(f'#{r}' for r in gone)}")

    def refresh_after_delete():
        return (*refresh()[:3], gr.update(choices=run_choices(ctx), value=[]))

    lists = [c["experiments"], c["runs"], c["exp_choice"], c["run_choice"]]
    c["refresh"].click(refresh, outputs=lists)
    c["diff_btn"].click(diff, inputs=[c["run_choice"], c["exp_choice"]], outputs=c["diff"])
    c["export_runs"].click(export_runs, inputs=[c["run_choice"], c["fmt"]], outputs=c["file"])
    c["export_exp"].click(export_experiment, inputs=[c["exp_choice"], c["fmt"]], outputs=c["file"])
    c["bundle"].click(bundle, inputs=[c["run_choice"], c["exp_choice"]], outputs=c["file"])
    # delete writes nothing itself: on failure only the toast shows, the lists stay intact
    c["delete_event"] = c["delete"].click(delete, inputs=c["run_choice"], outputs=[]).success(
        refresh_after_delete, outputs=lists)
    c["refresh_fn"] = refresh
    c["lists"] = lists
