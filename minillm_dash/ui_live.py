"""Live tab: per-metric charts of every run of an experiment, runs table, cancel, summaries, samples.

Refresh model (design.md "Lessons from the tools"): a gr.Timer ticks every 1.5 s; each tick asks
the db for the max step per run (one index probe each) and fetches only rows newer than what this
page holds (a per-session MetricCache in gr.State). A chart is rebuilt only when its metric got new
rows or a display setting changed; otherwise its output is gr.skip(). When no run of the
experiment is queued or running and nothing new arrived, the timer switches itself off; launching,
cancelling, choosing an experiment or pressing Refresh switches it on again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from minillm_dash import dashboard_queries as Q
from minillm_dash.plots import empty_figure
from minillm_dash.ui_common import UIContext, experiment_choices, frame, run_label, user_errors

MAX_CHARTS = 6
TICK_SECONDS = 1.5
NAMES_EVERY_S = 15.0  # how often the picker re-reads the db's metric names while runs are active
X_CHOICES = [("step", "step"), ("wall time", "wall_time"), ("tokens seen", "tokens_seen")]
SAMPLE_HEADERS = ["run", "latest generation"]


@dataclass
class LiveState:
    """One browser session's view: the metric cache and what each chart slot currently shows."""

    experiment_id: int | None = None
    cache: Q.MetricCache = field(default_factory=Q.MetricCache)
    rendered: dict[int, tuple] = field(default_factory=dict)
    visible: dict[int, bool] = field(default_factory=dict)
    names_shown: tuple[str, ...] = ()
    summary_sig: tuple = ()
    samples_sig: tuple = ()
    timer_active: bool = True
    names_checked_at: float = 0.0
    cancel_choices: list = field(default_factory=list)


def selected_metrics(loss: list[str] | None, yard: list[str] | None, diag: list[str] | None) -> list[str]:
    """Yardsticks first (the comparable numbers), then loss terms, then diagnostics; at most MAX_CHARTS."""
    out: list[str] = []
    for group in (yard, loss, diag):
        for m in group or []:
            if m not in out:
                out.append(m)
    return out[:MAX_CHARTS]


class LiveTab:
    """Builds the Live tab and owns its refresh function (used by the timer and other tabs)."""

    def __init__(self, ctx: UIContext):
        self.ctx = ctx
        groups = Q.group_metrics(Q.KNOWN_METRICS)
        default = set(Q.DEFAULT_CHART_METRICS)
        with gr.Row():
            self.experiment = gr.Dropdown(choices=experiment_choices(ctx.db), label="Experiment", scale=4,
                                          elem_id="live-experiment")
            self.refresh_btn = gr.Button("Refresh", scale=1)
        with gr.Row():
            self.x_axis = gr.Radio(choices=X_CHOICES, value="step", label="x-axis", scale=2)
            self.smoothing = gr.Slider(0.0, 0.99, value=0.6, step=0.01, label="EMA smoothing (weight of the past)",
                                       info="debiased EMA; the raw line stays faint", scale=3)
            self.log_y = gr.Checkbox(label="log y-axis", value=False, scale=1)
            self.show_seeds = gr.Checkbox(label="show individual seeds", value=False, scale=1)
            self.band = gr.Radio(choices=[("± std", "std"), ("95% CI of the mean", "ci95")], value="std",
                                 label="seed band", scale=2)
        with gr.Accordion("Metrics", open=True):
            with gr.Row():
                self.yard = gr.CheckboxGroup(choices=groups["yardstick"],
                                             value=[m for m in groups["yardstick"] if m in default],
                                             label="Yardsticks (comparable across variants)", elem_id="pick-yardsticks")
                self.loss = gr.CheckboxGroup(choices=groups["loss"], value=[m for m in groups["loss"] if m in default],
                                             label="Loss terms (variant-specific)", elem_id="pick-losses")
                self.diag = gr.CheckboxGroup(choices=groups["diagnostic"], value=[], label="Diagnostics",
                                             elem_id="pick-diagnostics")
        self.status = gr.Markdown(elem_id="live-status")
        self.plots: list[gr.Plot] = []
        for row in range(MAX_CHARTS // 2):
            with gr.Row():
                for col in range(2):
                    i = row * 2 + col
                    self.plots.append(gr.Plot(label=f"chart {i + 1}", show_label=False, visible=i < 3,
                                              elem_id=f"live-chart-{i}", elem_classes=["live-chart"]))
        gr.Markdown("### Runs")
        self.runs = gr.Dataframe(value=frame(Q.RUNS_TABLE_HEADERS, []), interactive=False, elem_id="runs-table")
        with gr.Row():
            self.cancel_choice = gr.Dropdown(choices=[], label="Run to cancel", scale=3, elem_id="cancel-choice")
            self.cancel_btn = gr.Button("Cancel run", variant="stop", scale=1, elem_id="cancel-btn")
        gr.Markdown("### Per-variant summary")
        with gr.Row():
            self.summary_metric = gr.Dropdown(choices=list(Q.KNOWN_METRICS), value="eval/klr", label="Metric",
                                              allow_custom_value=True, scale=2)
            self.threshold = gr.Number(label="Threshold: steps until the metric reaches it (0 = off)", value=0,
                                       scale=1)
        self.summary = gr.Dataframe(value=frame(Q.SUMMARY_HEADERS, []), interactive=False, elem_id="summary-table")
        gr.Markdown("### Latest samples (same prompt, side by side)")
        self.sample_prompt = gr.Textbox(label="Prompt", interactive=False, lines=2)
        self.samples = gr.Dataframe(value=frame(SAMPLE_HEADERS, []), interactive=False, wrap=True,
                                    elem_id="samples-table")
        self.timer = gr.Timer(TICK_SECONDS, active=False)
        self.state = gr.State(None)  # a LiveState, created by the first refresh of the session
        self._wire()

    # ------------------------------------------------------------------ wiring
    @property
    def inputs(self) -> list[Any]:
        return [self.state, self.experiment, self.loss, self.yard, self.diag, self.x_axis, self.smoothing,
                self.log_y, self.show_seeds, self.threshold, self.summary_metric, self.band]

    @property
    def outputs(self) -> list[Any]:
        return [self.state, *self.plots, self.runs, self.summary, self.sample_prompt, self.samples,
                self.cancel_choice, self.loss, self.yard, self.diag, self.timer, self.status]

    def _wire(self) -> None:
        # One concurrency group for every refresh: a timer tick and a settings change of the same page
        # must not merge rows into the same session cache at the same time (a lost append would
        # never be fetched again). A refresh takes tens of ms, so serialising them costs nothing.
        quiet = dict(inputs=self.inputs, outputs=self.outputs, show_progress="hidden",
                     concurrency_id="live-refresh", concurrency_limit=1)
        self.timer.tick(self.refresh, trigger_mode="always_last", **quiet)
        self.refresh_btn.click(self.refresh_forced, **quiet)
        self.experiment.change(self.refresh_forced, **quiet)
        for control in (self.x_axis, self.log_y, self.show_seeds, self.band, self.loss, self.yard, self.diag,
                        self.summary_metric):
            control.change(self.refresh, **quiet)
        self.smoothing.release(self.refresh, **quiet)
        self.threshold.submit(self.refresh, **quiet)
        self.threshold.blur(self.refresh, **quiet)
        self.cancel_btn.click(self.cancel, inputs=[self.cancel_choice], outputs=[]).then(self.refresh_forced, **quiet)

    @user_errors
    def cancel(self, run_id: int | None) -> None:
        if run_id is None:
            raise gr.Error("choose a queued or running run to cancel")
        if not self.ctx.runner.cancel(int(run_id)):
            raise gr.Error(f"run #{run_id} is not queued or running in this dashboard process")
        gr.Info(f"run #{run_id}: cancel requested; it stops before its next step")

    def refresh_forced(self, state: LiveState | None, *args: Any):
        if not isinstance(state, LiveState):
            state = LiveState()
        state.timer_active = False  # forces gr.Timer(active=...) to be sent again
        state.rendered = {}
        state.cancel_choices = [None]  # forces the cancel list to be sent again
        state.summary_sig = state.samples_sig = ()
        return self.refresh(state, *args, force_timer=True)

    # ------------------------------------------------------------------ the refresh
    @user_errors
    def refresh(self, state: LiveState, experiment_id: int | None, loss: list[str], yard: list[str],
                diag: list[str], x_axis: str, smoothing: float, log_y: bool, show_seeds: bool,
                threshold: float | None, summary_metric: str | None, band: str = "std", force_timer: bool = False):
        db = self.ctx.db
        skip = gr.skip()
        if state is None or not isinstance(state, LiveState):
            state = LiveState()
        if experiment_id is None:
            return self._nothing(state, "Choose an experiment (or launch one).")
        if experiment_id != state.experiment_id:
            state = LiveState(experiment_id=int(experiment_id), timer_active=False, cancel_choices=[None])
        runs = db.list_runs(int(experiment_id))
        ids = [int(r["id"]) for r in runs]
        state.cache.forget_runs(ids)
        max_steps = db.max_steps(ids)
        active = Q.any_active(runs)
        finished = [int(r["id"]) for r in runs if r.get("status") not in Q.ACTIVE_STATUSES]
        charts = selected_metrics(loss, yard, diag)
        wanted = Q.wanted_metrics(charts, summary_metric or "eval/klr", x_axis)
        plan = state.cache.plan_queries(max_steps, wanted, finished)
        changed: set[str] = set()
        for rid, names, after in plan:
            changed |= state.cache.add_rows(db.metric_rows([rid], names=names, after_step={rid: after}))
        for rid in {p[0] for p in plan}:
            state.cache.mark_queried(rid, wanted, max_steps[rid], rid in finished)
        pick_updates = self._pickers(state, ids, active, bool(plan))

        plots = self._charts(state, runs, charts, x_axis, float(smoothing or 0), bool(log_y), bool(show_seeds),
                             band or "std")
        runs_df = frame(Q.RUNS_TABLE_HEADERS, Q.runs_table_rows(runs, state.cache, max_steps=max_steps))
        summary = self._summary(state, runs, summary_metric or "eval/klr", threshold)
        prompt, samples = self._samples(state, runs)
        cancel_choices = [(run_label(r) + f" ({r['status']})", int(r["id"])) for r in runs
                          if r.get("status") in Q.ACTIVE_STATUSES]
        cancel_update: Any = skip
        if cancel_choices != state.cancel_choices:  # re-sending every tick would close an open dropdown
            state.cancel_choices = cancel_choices
            cancel_update = gr.update(choices=cancel_choices)

        keep_ticking = active or bool(plan)
        timer_update: Any = skip
        if force_timer or keep_ticking != state.timer_active:
            timer_update = gr.Timer(active=keep_ticking)
            state.timer_active = keep_ticking
        n_active = sum(r.get("status") in Q.ACTIVE_STATUSES for r in runs)
        status = (f"{len(runs)} runs, {n_active} queued/running; live refresh "
                  f"{'on' if keep_ticking else 'paused (nothing running)'}; {len(changed)} metrics updated")
        return [state, *plots, runs_df, summary, prompt, samples, cancel_update, *pick_updates, timer_update, status]

    def _pickers(self, state: LiveState, run_ids: list[int], active: bool, fetched: bool) -> list[Any]:
        """Picker choices = known metrics + any other name the runs logged. The db's name list is
        asked for on the first refresh, then at most every NAMES_EVERY_S while runs are active."""
        now = time.monotonic()
        due = not state.names_checked_at or (fetched and now - state.names_checked_at > NAMES_EVERY_S)
        if run_ids and (due or (not active and fetched)):
            state.names_checked_at = now
            extra = tuple(n for n in self.ctx.db.metric_names(run_ids) if n not in Q.KNOWN_METRICS)
            if extra != state.names_shown:
                state.names_shown = extra
                groups = Q.group_metrics([*Q.KNOWN_METRICS, *extra])
                return [gr.update(choices=groups["loss"]), gr.update(choices=groups["yardstick"]),
                        gr.update(choices=groups["diagnostic"])]
        return [gr.skip()] * 3

    def _nothing(self, state: LiveState, message: str):
        skip = gr.skip()
        plots = [gr.update(value=empty_figure(message), visible=True)] + [skip] * (MAX_CHARTS - 1)
        state.rendered = {}
        state.timer_active = False
        return [state, *plots, frame(Q.RUNS_TABLE_HEADERS, []), frame(Q.SUMMARY_HEADERS, []), "",
                frame(SAMPLE_HEADERS, []), gr.update(choices=[]), skip, skip, skip, gr.Timer(active=False), message]

    def _charts(self, state: LiveState, runs: list[dict], metrics: list[str], x_axis: str, smoothing: float,
                log_y: bool, show_seeds: bool, band: str) -> list[Any]:
        """One update per chart slot: a new figure only when its inputs changed, else gr.skip()."""
        out: list[Any] = []
        run_sig = tuple((int(r["id"]), r.get("variant"), r.get("seed")) for r in runs)
        tokens_version = state.cache.version.get("train/tokens_seen", 0) if x_axis == "tokens_seen" else 0
        for i in range(MAX_CHARTS):
            if i >= len(metrics):
                out.append(gr.update(visible=False) if state.visible.get(i, i < 3) else gr.skip())
                state.visible[i] = False
                state.rendered.pop(i, None)
                continue
            m = metrics[i]
            sig = (m, x_axis, smoothing, log_y, show_seeds, band, state.cache.version.get(m, 0), tokens_version,
                   run_sig)
            if state.rendered.get(i) == sig and state.visible.get(i):
                out.append(gr.skip())
                continue
            fig = Q.build_live_figure(state.cache, runs, m, x_axis=x_axis, smoothing=smoothing, log_y=log_y,
                                      show_seeds=show_seeds, band=band)
            out.append(gr.update(value=fig, visible=True))
            state.rendered[i] = sig
            state.visible[i] = True
        return out

    def _summary(self, state: LiveState, runs: list[dict], metric: str, threshold: float | None) -> Any:
        sig = (metric, threshold, state.cache.version.get(metric, 0), len(runs))
        if sig == state.summary_sig:
            return gr.skip()
        state.summary_sig = sig
        series = Q.run_series(state.cache, runs, metric, "step")
        headers = list(Q.SUMMARY_HEADERS)
        headers[2], headers[3] = f"final {metric}", f"best {metric}"
        return frame(headers, Q.variant_summary_rows(series, float(threshold) if threshold else None,
                                                     lower_is_better=not metric.endswith("rouge_l")))

    def _samples(self, state: LiveState, runs: list[dict]) -> tuple[Any, Any]:
        # Samples are stored at evaluation steps, before that step's metrics are flushed: a new
        # eval/klr row (always fetched) is the cue to look, instead of querying every tick.
        sig = (tuple(int(r["id"]) for r in runs), state.cache.version.get("eval/klr", 0))
        if sig == state.samples_sig:
            return gr.skip(), gr.skip()
        state.samples_sig = sig
        by_run: dict[str, list[dict]] = {}
        for r in runs:
            rows = self.ctx.db.samples(int(r["id"]))
            if rows:
                last = max(x["step"] for x in rows)
                by_run[run_label(r)] = [x for x in rows if x["step"] == last]
        prompt, rows = Q.samples_side_by_side(by_run)
        return prompt, frame(SAMPLE_HEADERS, rows)
