"""The Gradio dashboard: Blocks assembled from one module per tab (ui_data, ui_launch, ui_live,
ui_history). Wiring only; computations live in the engine and in dashboard_queries/plots.

`build_demo(db, runner, max_upload_mb=...)` builds the Blocks without launching, so app.py and the
browser tests launch the same object (the tests with tiny models and a temporary database).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402

from minillm_dash import data, export  # noqa: E402
from minillm_dash.db import Database  # noqa: E402
from minillm_dash.ui_common import UIContext, experiment_choices, progress_callback, user_errors  # noqa: E402
from minillm_dash.ui_data import build_data_tab, dataset_choices  # noqa: E402
from minillm_dash.ui_history import build_history_tab  # noqa: E402
from minillm_dash.ui_launch import HP_ORDER, build_launch_tab, experiment_from_inputs  # noqa: E402
from minillm_dash.ui_live import LiveTab  # noqa: E402

CSS = """
.live-chart { min-height: 340px; }
"""


def ensure_builtin_dataset(db: Database) -> int:
    """The built-in prompt set is always selectable (idempotent: stored once by content hash)."""
    return db.add_dataset(data.builtin_dataset())


def allowed_paths() -> list[str]:
    """Folders whose files the dashboard hands out as downloads (pass to launch(allowed_paths=...))."""
    return [str(export.exports_dir())]


def build_demo(db: Database, runner: Any, *, max_upload_mb: float = 50) -> gr.Blocks:
    """The whole dashboard as one Blocks (not launched)."""
    ctx = UIContext(db=db, runner=runner, max_upload_bytes=int(max_upload_mb * 1024 * 1024))
    builtin_id = ensure_builtin_dataset(db)
    with gr.Blocks(title="minillm-dash: distillation variants side by side") as demo:
        gr.Markdown("## minillm-dash: compare knowledge-distillation loss variants side by side")
        with gr.Tabs(selected="launch") as tabs:
            with gr.Tab("Data", id="data"):
                data_tab = build_data_tab(ctx)
            with gr.Tab("Launch", id="launch"):
                launch_tab = build_launch_tab(ctx)
            with gr.Tab("Live", id="live"):
                live = LiveTab(ctx)
            with gr.Tab("History and export", id="history") as history_tab:
                history = build_history_tab(ctx)
        # Lists of other sessions' or the CLI's experiments: refreshed whenever the tab is opened.
        history_tab.select(history["refresh_fn"], outputs=history["lists"])
        _wire_launch(ctx, launch_tab, live, history, tabs)
        _wire_cross_tab(ctx, data_tab, launch_tab, live, history, builtin_id, demo)
    return demo


def _wire_launch(ctx: UIContext, c: dict[str, Any], live: LiveTab, history: dict[str, Any], tabs: gr.Tabs) -> None:
    hp_components = [c["hp"][k] for k in HP_ORDER]

    @user_errors
    def launch(name: str, dataset_id: int | None, teacher: str, student: str, device: str, trust_remote_code: bool,
               presets: list[str], customs: list[dict], seeds: str, *hp_values: Any,
               progress: gr.Progress = gr.Progress()) -> dict:
        exp = experiment_from_inputs(name, dataset_id, teacher, student, device, presets, customs, seeds,
                                     list(hp_values), trust_remote_code=trust_remote_code)
        status: list[str] = []
        experiment_id = ctx.runner.launch(exp, progress_callback(progress, status))
        n_runs = len(exp.variants) * len(exp.seeds)
        gr.Info(f"experiment #{experiment_id} launched: {n_runs} runs")
        message = (f"Launched experiment **#{experiment_id}** ({n_runs} runs: "
                   f"{', '.join(v.name for v in exp.variants)} × seeds {list(exp.seeds)}). Watch it on the Live tab.")
        return {"id": experiment_id, "message": message}

    def show_launched(res: dict):
        choices = experiment_choices(ctx.db)
        return (res["message"], gr.update(choices=choices, value=res["id"]), gr.Tabs(selected="live"),
                gr.update(choices=choices))

    # launch -> State, then render: a refused launch shows its toast and leaves every widget as it was
    launched = gr.State(None)
    c["launch"].click(
        launch,
        inputs=[c["name"], c["dataset"], c["teacher"], c["student"], c["device"], c["trust_remote_code"],
                c["presets"], c["customs"], c["seeds"], *hp_components],
        outputs=launched,
    ).success(show_launched, inputs=launched,
              outputs=[c["launch_status"], live.experiment, tabs, history["exp_choice"]])

def _wire_cross_tab(ctx: UIContext, data_tab: dict[str, Any], launch_tab: dict[str, Any], live: LiveTab,
                    history: dict[str, Any], builtin_id: int, demo: gr.Blocks) -> None:
    """Keep dropdowns of other tabs in step with the database when a tab is opened or the page loads."""

    def datasets_for_launch(current: int | None):
        choices = dataset_choices(ctx)
        ids = {v for _, v in choices}
        fallback = builtin_id if builtin_id in ids else (choices[0][1] if choices else None)
        value = current if current in ids else fallback
        return gr.update(choices=choices, value=value)

    def on_load():
        exps = experiment_choices(ctx.db)
        latest = exps[0][1] if exps else None
        return datasets_for_launch(None), gr.update(choices=exps, value=latest)

    demo.load(on_load, outputs=[launch_tab["dataset"], live.experiment])
    demo.load(history["refresh_fn"], outputs=history["lists"])
    data_tab["table"].change(datasets_for_launch, inputs=launch_tab["dataset"], outputs=launch_tab["dataset"])
    history["delete_event"].then(lambda: gr.update(choices=experiment_choices(ctx.db)), outputs=live.experiment)
