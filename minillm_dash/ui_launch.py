"""Launch tab: dataset, models, variants (presets + custom builder), seeds, hyperparameters, go."""

from __future__ import annotations

import time
from typing import Any

import gradio as gr
import pandas as pd

from minillm_dash import variants as V
from minillm_dash.config import LR_SCHEDULES, ExperimentConfig, TrainSettings
from minillm_dash.errors import ConfigError
from minillm_dash.ui_common import UIContext, frame, progress_callback, user_errors
from minillm_dash.ui_data import dataset_choices

TEACHER_CHOICES = ["default", "tiny"]
STUDENT_CHOICES = ["pruned:6", "pruned:3", "pruned:12", "pruned:1"]
DEFAULT_PRESETS = ["minillm", "rkl"]
CUSTOM_HEADERS = ["name", "what it computes"]
JSD_HELP = ("β=0 is *defined* as forward KL(p‖q) and β=1 as reverse KL(q‖p), but JSD_β itself tends to 0 "
            "at both ends: the loss jumps at the endpoints, it does not approach KLF/KLR continuously.")

_defaults = TrainSettings()


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0, 1, 2' or '0 1 2' or '0-4' -> seeds; ConfigError naming the field otherwise."""
    seeds: list[int] = []
    for part in str(text).replace(",", " ").split():
        try:
            if "-" in part.strip("-") and not part.startswith("-"):
                lo, hi = (int(x) for x in part.split("-", 1))
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise ConfigError(f"'{part}' is not a whole number (write e.g. 0, 1, 2 or 0-4)", field="seeds") from None
    if not seeds:
        raise ConfigError("give at least one seed, e.g. 0 or 0, 1, 2", field="seeds")
    return tuple(seeds)


def preset_choices() -> list[tuple[str, str]]:
    return [(f"{p.name}: {p.summary}", p.name) for p in V.PRESETS.values()]


def custom_frame(customs: list[dict]) -> pd.DataFrame:
    return frame(CUSTOM_HEADERS, [[c["name"], V.describe(V.VariantConfig(**c))] for c in customs])


def _int(value: Any, field: str) -> int:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"must be a whole number, got {value!r}", field=field) from None
    if f != int(f):
        raise ConfigError(f"must be a whole number, got {value!r}", field=field)
    return int(f)


def _hp_int(key: str, label: str, info: str | None = None) -> gr.Number:
    """An integer hyperparameter box with the TrainSettings default (and a CPU/GPU hint)."""
    return gr.Number(elem_id=f"hp-{key}", label=label, value=getattr(_defaults, key), precision=0, info=info)


def build_launch_tab(ctx: UIContext) -> dict[str, Any]:
    """Widgets of the Launch tab and its local events; the launch click is wired in ui.py (it
    updates the Live tab too)."""
    c: dict[str, Any] = {}
    with gr.Row():
        c["name"] = gr.Textbox(elem_id="launch-name", label="Experiment name", value="experiment", scale=2)
        c["dataset"] = gr.Dropdown(elem_id="launch-dataset", choices=dataset_choices(ctx), label="Dataset", scale=3,
                                   info="stored datasets (Data tab); the built-in prompt set is always there")
    with gr.Row():
        c["teacher"] = gr.Dropdown(
            elem_id="launch-teacher", choices=TEACHER_CHOICES, value="default", allow_custom_value=True,
            label="Teacher", info="'default' = embedded SmolLM2-135M-Instruct; or a hub id, or a local folder")
        c["student"] = gr.Dropdown(
            elem_id="launch-student", choices=STUDENT_CHOICES, value="pruned:6", allow_custom_value=True,
            label="Student", info="'pruned:K' = the teacher keeping K evenly spaced layers; or a hub id / folder")
        c["device"] = gr.Dropdown(choices=["auto", "cpu", "cuda"], value="auto", label="Device",
                                  info="auto: cuda when available")
        c["trust_remote_code"] = gr.Checkbox(
            value=False, label="Trust remote code", elem_id="launch-trust-remote-code",
            info="lets a hub/local model run Python code it ships; leave off unless you trust its author")
    with gr.Row():
        c["check"] = gr.Button("Check models (vocabulary)", scale=1)
        c["check_status"] = gr.Textbox(label="Model check", interactive=False, scale=4, elem_id="model-check")
    gr.Markdown("### Variants")
    with gr.Row():
        c["wt"] = gr.Button("w_t question: minillm vs minillm_wsingle, α=0.2, seeds 0,1,2", variant="secondary",
                            elem_id="wt-question")
    c["presets"] = gr.CheckboxGroup(choices=preset_choices(), value=DEFAULT_PRESETS, label="Presets",
                                    elem_id="preset-variants")
    c["customs"] = gr.State([])
    with gr.Accordion("Custom variant builder", open=False):
        gr.Markdown("Start from a preset, change switches, add it under a new name. " + JSD_HELP)
        with gr.Row():
            c["base"] = gr.Dropdown(choices=list(V.PRESETS), value="minillm", label="Start from preset")
            c["cname"] = gr.Textbox(elem_id="custom-name", label="Name of the custom variant", value="my_variant")
        sw: dict[str, Any] = {}
        init = dict(zip(SWITCH_ORDER, _switch_values(V.PRESETS["minillm"].config)))
        with gr.Row():
            sw["source"] = gr.Dropdown(value=init["source"], choices=list(V.SOURCES), label="Data source",
                                       info="reference / teacher samples / student samples / teacher-mixed")
            sw["mix_alpha"] = gr.Number(elem_id="custom-mix_alpha", value=init["mix_alpha"],
                                        label="mixing α (source 'mixed')",
                                        info="MiniLLM: 0.2")
            sw["gkd_on"] = gr.Checkbox(value=init["gkd_on"], label="GKD source mixing",
                                       info="per step: student samples w.p. λ, else references")
            sw["gkd"] = gr.Number(value=init["gkd"], label="GKD λ: P(student samples)")
        with gr.Row():
            sw["divergence"] = gr.Dropdown(value=init["divergence"], choices=["none", *V.DIVERGENCES],
                                           label="Token divergence")
            sw["divergence_coef"] = gr.Number(value=init["divergence_coef"], label="divergence coefficient")
            sw["ce_coef"] = gr.Number(value=init["ce_coef"], label="cross-entropy coefficient")
            sw["loss_temperature"] = gr.Number(value=init["loss_temperature"], label="loss temperature τ")
        with gr.Row():
            sw["beta"] = gr.Slider(0, 1, value=init["beta"], step=0.05, label="JSD β", info=JSD_HELP)
            sw["skew_alpha"] = gr.Number(value=init["skew_alpha"], label="skew α (skl/srkl)")
            sw["mu"] = gr.Number(value=init["mu"], label="AKL μ")
        with gr.Row():
            sw["single"] = gr.Radio(value=init["single"], choices=list(V.SINGLE_SETTINGS),
                                    label="MiniLLM single-step term",
                                    info="weighted = by w_t (paper Eq. 7); unweighted = LMOps")
            sw["long_term"] = gr.Checkbox(value=init["long_term"], label="long-term (policy-gradient) term")
            sw["include_current"] = gr.Checkbox(value=init["include_current"],
                                                label="return includes current token (s=t, LMOps)")
        with gr.Row():
            sw["gamma"] = gr.Number(value=init["gamma"], label="γ discount")
            sw["length_norm"] = gr.Checkbox(value=init["length_norm"], label="length normalisation")
            sw["whiten"] = gr.Checkbox(value=init["whiten"], label="whiten advantages")
            sw["clip"] = gr.Number(value=init["clip"], label="clip ε")
            sw["lm_coef"] = gr.Number(value=init["lm_coef"], label="λ_lm (LM term on references)")
        with gr.Row():
            c["add_custom"] = gr.Button("Add custom variant", variant="primary", elem_id="add-custom")
            c["clear_custom"] = gr.Button("Clear custom variants")
        c["custom_table"] = gr.Dataframe(value=custom_frame([]), label="Custom variants to launch", interactive=False,
                                         elem_id="custom-table")
    gr.Markdown("### Seeds and hyperparameters")
    hp: dict[str, Any] = {}
    with gr.Row():
        c["seeds"] = gr.Textbox(elem_id="launch-seeds", label="Seeds", value="0",
                                info="e.g. 0, 1, 2 or 0-4; each variant runs once per seed")
        hp["steps"] = _hp_int("steps", "Steps", "CPU: 20-100; GPU: 500-5000")
        hp["batch_size"] = _hp_int("batch_size", "Batch size (prompts)", "CPU: 2-4; GPU: 16-64")
        hp["lr"] = gr.Number(elem_id="hp-lr", label="Learning rate", value=_defaults.lr,
                             info="5e-5 works for the default pair")
        hp["lr_schedule"] = gr.Dropdown(elem_id="hp-lr_schedule", choices=list(LR_SCHEDULES),
                                        value=_defaults.lr_schedule, label="LR schedule")
        hp["warmup_steps"] = _hp_int("warmup_steps", "Warm-up steps")
    with gr.Row():
        hp["grad_clip"] = gr.Number(elem_id="hp-grad_clip", label="Grad clip (0 = off)", value=_defaults.grad_clip)
        hp["max_new_tokens"] = _hp_int("max_new_tokens", "Max new tokens", "CPU: 16-32; GPU: 128-256")
        hp["max_prompt_tokens"] = _hp_int("max_prompt_tokens", "Max prompt tokens")
        hp["eval_every"] = _hp_int("eval_every", "Eval every (steps)", "held-out yardsticks; CPU: 10; GPU: 50-100")
        hp["heldout_size"] = _hp_int("heldout_size", "Held-out prompts", "CPU: 8; GPU: 64-256")
        hp["eval_max_new_tokens"] = _hp_int("eval_max_new_tokens", "Eval max new tokens")
    with gr.Row():
        hp["yardstick_every"] = _hp_int(
            "yardstick_every", "Yardstick every (steps)",
            "exact train/klr + train/klf on the student's own samples; costs an extra sampling pass for "
            "variants that train on other sequences (mixed, teacher, reference)")
        hp["save_students"] = gr.Checkbox(elem_id="hp-save_students", value=_defaults.save_students,
                                          label="Save finished students under models/students/")
    with gr.Row():
        c["max_concurrent_note"] = gr.Markdown(
            f"Runs train side by side in background threads (at most {getattr(ctx.runner, 'max_concurrent', '?')} "
            "at once; the rest queue). Losses of different variants are different quantities: compare runs on "
            "the yardsticks (train/klr, eval/klr, ...) that every run logs the same way.")
    with gr.Row():
        c["launch"] = gr.Button("Launch", variant="primary", elem_id="launch-btn", scale=1)
        c["launch_status"] = gr.Markdown(elem_id="launch-status")
    c["switches"] = sw
    c["hp"] = hp
    _wire_local(ctx, c)
    return c


def _switch_values(v: V.VariantConfig) -> list[Any]:
    """A variant's switches in SWITCH_ORDER (the builder widgets' order)."""
    gkd = v.gkd_student_prob
    return [v.source, v.mix_alpha, gkd is not None, 0.5 if gkd is None else gkd, v.divergence or "none",
            v.divergence_coef, v.ce_coef, v.loss_temperature, v.beta, v.skew_alpha, v.mu, v.single, v.long_term,
            v.include_current, v.gamma, v.length_norm, v.whiten, v.clip, v.lm_coef]


SWITCH_ORDER = ["source", "mix_alpha", "gkd_on", "gkd", "divergence", "divergence_coef", "ce_coef",
                "loss_temperature", "beta", "skew_alpha", "mu", "single", "long_term", "include_current", "gamma",
                "length_norm", "whiten", "clip", "lm_coef"]


def variant_from_switches(name: str, values: list[Any]) -> V.VariantConfig:
    """Builder widgets -> a validated VariantConfig (ConfigError names the switch)."""
    d = dict(zip(SWITCH_ORDER, values))
    gkd_on, gkd = d.pop("gkd_on"), d.pop("gkd")
    div = d.pop("divergence")
    if gkd_on and gkd is None:
        raise ConfigError("needs a number in [0, 1]", field="gkd_student_prob")
    numbers = ("mix_alpha", "divergence_coef", "ce_coef", "loss_temperature", "beta", "skew_alpha", "mu", "gamma",
               "clip", "lm_coef")
    for k in numbers:
        if d[k] is None:
            raise ConfigError("needs a number", field=k)
        d[k] = float(d[k])
    cfg = V.VariantConfig(name=str(name).strip(), divergence=None if div in (None, "none") else div,
                          gkd_student_prob=float(gkd) if gkd_on else None,
                          **{k: d[k] for k in SWITCH_ORDER if k in d})
    return V.validate_variant(cfg)


def _wire_local(ctx: UIContext, c: dict[str, Any]) -> None:
    sw_components = [c["switches"][k] for k in SWITCH_ORDER]

    def load_preset(name: str):
        v = V.PRESETS[name].config if name in V.PRESETS else V.VariantConfig()
        return [f"{name}_custom", *_switch_values(v)]

    @user_errors
    def add_custom(name: str, customs: list[dict], presets: list[str], *values: Any):
        v = variant_from_switches(name, list(values))
        taken = set(presets or []) | {x["name"] for x in customs}
        if v.name in taken or v.name in V.PRESETS:
            raise ConfigError(f"'{v.name}' is already used by a preset or another variant; pick a new name",
                              field="name")
        gr.Info(f"added custom variant {v.name}: {V.describe(v)}")
        return [*customs, v.to_dict()]

    def clear_custom():
        return [], custom_frame([])

    @user_errors
    def check_models(teacher: str, student: str, device: str, trust_remote_code: bool,
                     progress: gr.Progress = gr.Progress()):
        status: list[str] = []
        message = ctx.runner.check_models(teacher, student, None if device == "auto" else device,
                                          progress_callback(progress, status),
                                          trust_remote_code=trust_remote_code is True)
        return message

    def wt_question(customs: list[dict]):
        if customs:
            gr.Info("custom variants cleared: the w_t question compares exactly minillm and minillm_wsingle")
        return (list(V.WT_QUESTION_VARIANTS), "0, 1, 2", 0.2, "w_t question", [], custom_frame([]))

    c["base"].change(load_preset, inputs=c["base"], outputs=[c["cname"], *sw_components])
    c["add_custom"].click(add_custom, inputs=[c["cname"], c["customs"], c["presets"], *sw_components],
                          outputs=c["customs"]).success(custom_frame, inputs=c["customs"], outputs=c["custom_table"])
    c["clear_custom"].click(clear_custom, outputs=[c["customs"], c["custom_table"]])
    c["check"].click(check_models, inputs=[c["teacher"], c["student"], c["device"], c["trust_remote_code"]],
                     outputs=c["check_status"])
    c["wt"].click(wt_question, inputs=c["customs"],
                  outputs=[c["presets"], c["seeds"], c["switches"]["mix_alpha"], c["name"], c["customs"],
                           c["custom_table"]])


HP_ORDER = ["steps", "batch_size", "lr", "lr_schedule", "warmup_steps", "grad_clip", "max_new_tokens",
            "max_prompt_tokens", "eval_every", "heldout_size", "eval_max_new_tokens", "yardstick_every", "save_students"]
INT_HP = {"steps", "batch_size", "warmup_steps", "max_new_tokens", "max_prompt_tokens", "eval_every", "heldout_size",
          "eval_max_new_tokens", "yardstick_every"}
PASS_THROUGH_HP = {"lr_schedule", "save_students"}


def experiment_from_inputs(name: str, dataset_id: int | None, teacher: str, student: str, device: str,
                           presets: list[str], customs: list[dict], seeds: str,
                           hp_values: list[Any], trust_remote_code: bool = False) -> ExperimentConfig:
    """Widgets -> a validated ExperimentConfig (every refusal is a ConfigError naming the field)."""
    hp = dict(zip(HP_ORDER, hp_values))
    settings: dict[str, Any] = {}
    for k, v in hp.items():
        if v is None or v == "":
            raise ConfigError("needs a value", field=k)
        settings[k] = _int(v, k) if k in INT_HP else (v if k in PASS_THROUGH_HP else float(v))
    variants = tuple([V.preset(p) for p in presets or []] + [V.VariantConfig.from_dict(x) for x in customs or []])
    if not variants:
        raise ConfigError("tick at least one preset or add a custom variant", field="variants")
    train = TrainSettings(**settings, device=None if device in (None, "", "auto") else device)
    return ExperimentConfig(
        name=(name or "").strip() or time.strftime("experiment %Y-%m-%d %H:%M"),
        variants=variants, seeds=parse_seeds(seeds), teacher=(teacher or "").strip(),
        student=(student or "").strip(), dataset_id=None if dataset_id is None else int(dataset_id), train=train,
        trust_remote_code=trust_remote_code is True,
    ).validate()
