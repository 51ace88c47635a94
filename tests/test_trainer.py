"""The step loop on tiny real models: every preset trains, metrics are complete and reproducible,
divergence and cancellation end a run cleanly, and the teacher is never modified."""

import math

import pytest
import torch

from minillm_dash import data, losses
from minillm_dash.config import RunConfig, TrainSettings
from minillm_dash.errors import ConfigError
from minillm_dash.modeling import prune_layers
from minillm_dash.objective import ScoredLogits, compute_loss
from minillm_dash.trainer import RunTrainer
from minillm_dash.variants import PRESETS, preset

SETTINGS = TrainSettings(steps=3, batch_size=2, lr=1e-3, max_new_tokens=6, max_prompt_tokens=40, eval_every=2,
                         heldout_size=2, eval_max_new_tokens=6, samples_logged=2)
TIMING = ("time/", "mem/", "train/tokens_per_s")


def _dataset(n=12):
    rows = [{"prompt": f"Say the number {i}.", "response": f"{i}"} for i in range(n)]
    import json

    return data.load_dataset_bytes("\n".join(json.dumps(r) for r in rows).encode(), "numbers.jsonl")


def _train(tiny_models, variant, *, seed=0, settings=SETTINGS, hook=None, should_stop=lambda: False):
    teacher, tok = tiny_models
    student = prune_layers(teacher, 2).train().requires_grad_(True)
    cfg = RunConfig(teacher="tiny", student="pruned:2", variant=variant, seed=seed, train=settings)
    reports = []

    def report(r):
        reports.append(r)
        if hook:
            hook(r, student)

    outcome = RunTrainer(cfg, teacher, student, tok, _dataset(), torch.device("cpu")).run(report, should_stop)
    return outcome, reports


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_trains_and_logs_the_common_yardsticks(tiny_models, name):
    outcome, reports = _train(tiny_models, preset(name))
    assert outcome.status == "done" and outcome.steps_done == 3
    assert [r.step for r in reports] == [1, 2, 3]
    for r in reports:
        for key in ("loss/total", "train/klr", "train/klf", "train/entropy", "train/grad_norm", "train/lr",
                    "train/tokens_seen", "time/sampling", "time/teacher", "time/student", "time/optimizer",
                    "time/step", "mem/peak_mb"):
            assert key in r.metrics and math.isfinite(r.metrics[key]), (name, key, r.metrics.get(key))
    evals = [r for r in reports if "eval/klr" in r.metrics]
    assert [r.step for r in evals] == [2, 3]
    assert {"eval/klf", "eval/nll", "eval/rouge_l", "eval/length"} <= set(evals[0].metrics)
    assert len(evals[0].samples) == 2 and {"prompt", "text", "reference"} <= set(evals[0].samples[0])
    if PRESETS[name].config.source == "mixed":
        assert 0 < reports[0].metrics["train/w_min"] <= reports[0].metrics["train/w_max"] <= 1 / (1 - 0.2) + 1e-6
    if PRESETS[name].config.long_term:
        assert 0.0 <= reports[0].metrics["train/clip_frac"] <= 1.0


def test_same_seed_same_metrics_and_other_seed_differs(tiny_models):
    def values(seed):
        _, reports = _train(tiny_models, preset("minillm"), seed=seed)
        return [{k: v for k, v in r.metrics.items() if not k.startswith(TIMING)} for r in reports]

    first, again, other = values(0), values(0), values(1)
    assert first == again
    assert first != other


def test_runs_of_one_experiment_see_the_same_prompts_in_the_same_order(tiny_models):
    teacher, tok = tiny_models
    orders = []
    for name, seed in [("minillm", 0), ("rkl", 5)]:
        cfg = RunConfig(teacher="tiny", student="pruned:2", variant=preset(name), seed=seed, train=SETTINGS)
        trainer = RunTrainer(cfg, teacher, prune_layers(teacher, 2), tok, _dataset(), torch.device("cpu"))
        orders.append([[r.prompt for r in next(trainer.batches)] for _ in range(6)])
    assert orders[0] == orders[1]


def test_nan_loss_ends_the_run_as_diverged_at_that_step(tiny_models):
    def poison(report, student):
        if report.step == 2:
            with torch.no_grad():
                next(student.parameters()).fill_(float("nan"))

    outcome, reports = _train(tiny_models, preset("rkl"), hook=poison)
    assert outcome.status == "diverged" and outcome.steps_done == 3
    assert "step 3" in outcome.message
    assert [r.step for r in reports] == [1, 2, 3] and math.isnan(reports[-1].metrics["loss/total"])


def test_cancel_stops_between_steps(tiny_models):
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 1

    outcome, reports = _train(tiny_models, preset("fkl"), should_stop=stop)
    assert outcome.status == "cancelled" and outcome.steps_done == 1 and len(reports) == 1


def test_teacher_is_never_modified(tiny_models):
    teacher, _ = tiny_models
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    _train(tiny_models, preset("minillm"))
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad for p in teacher.parameters())


def test_training_reduces_reverse_kl_on_a_fixed_problem(tiny_models):
    settings = TrainSettings(steps=12, batch_size=4, lr=3e-3, max_new_tokens=6, max_prompt_tokens=40,
                             eval_every=100, heldout_size=0)
    _, reports = _train(tiny_models, preset("rkl"), settings=settings)
    klr = [r.metrics["train/klr"] for r in reports]
    assert sum(klr[-3:]) / 3 < sum(klr[:3]) / 3, klr


def test_reference_variants_need_references(tiny_models):
    teacher, tok = tiny_models
    no_refs = data.load_dataset_bytes(b"one\ntwo\nthree\nfour\nfive\n", "prompts.txt")
    cfg = RunConfig(teacher="tiny", student="pruned:2", variant=preset("sft"), seed=0, train=SETTINGS)
    with pytest.raises(ConfigError, match="reference"):
        RunTrainer(cfg, teacher, prune_layers(teacher, 2), tok, no_refs, torch.device("cpu"))


def test_objective_composes_the_loss_library_term_by_term():
    g = torch.Generator().manual_seed(0)
    B, T, V = 2, 4, 5
    s = torch.randn(B, T, V, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    y = torch.randint(0, V, (B, T), generator=g)
    m = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float64)
    old = losses.token_logprobs(s.detach(), y) + 0.05 * torch.randn(B, T, generator=g, dtype=torch.float64)
    tlp = losses.token_logprobs(t, y)
    w = losses.importance_weights(old, tlp, 0.2)
    lm = torch.tensor(0.7, dtype=torch.float64)
    batch = ScoredLogits(s, t, y, m, old_logprobs=old, teacher_logprobs=tlp, weights=w)
    v = preset("minillm_wsingle")
    got = compute_loss(v, batch, lm_loss=lm)
    adv = losses.minillm_advantages(tlp - old, m, gamma=0.95, include_current=True)
    expected = (losses.single_step_loss(s, t, m, w)
                + losses.long_term_loss(losses.token_logprobs(s, y), old, adv, m, weights=w, clip=0.2) + lm)
    assert torch.allclose(got.total, expected), (got.total, expected)
    assert set(got.terms) == {"single", "long", "lm"}
    kd = compute_loss(preset("kd"), batch)
    kd_expected = 0.5 * losses.cross_entropy(s, y, m) + 0.5 * losses.masked_mean(
        losses.token_divergence("fkl", s, t), m)
    assert torch.allclose(kd.total, kd_expected)
