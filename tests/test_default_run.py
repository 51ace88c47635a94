"""The embedded default models end to end (slow, still run in CI): load the real SmolLM2 teacher,
prune a 6-layer student, train two `minillm` steps and run one held-out evaluation."""

import math

import pytest
import torch

from minillm_dash import data
from minillm_dash.config import RunConfig, TrainSettings
from minillm_dash.modeling import ModelSource, load_student, load_teacher
from minillm_dash.trainer import RunTrainer
from minillm_dash.variants import preset

pytestmark = pytest.mark.slow


def test_two_minillm_steps_and_one_evaluation_with_the_default_models():
    device = torch.device("cpu")
    teacher, tok = load_teacher(ModelSource.parse("default"), device, torch.float32)
    student, _ = load_student(ModelSource.parse("pruned:6"), teacher, tok, device, torch.float32)
    settings = TrainSettings(steps=2, batch_size=2, lr=5e-5, max_new_tokens=12, max_prompt_tokens=96, eval_every=2,
                             heldout_size=2, eval_max_new_tokens=12, samples_logged=2)
    cfg = RunConfig(teacher="default", student="pruned:6", variant=preset("minillm"), seed=0, train=settings)
    reports = []
    outcome = RunTrainer(cfg, teacher, student, tok, data.builtin_dataset(), device).run(reports.append)
    assert outcome.status == "done" and [r.step for r in reports] == [1, 2]
    first, last = reports[0].metrics, reports[-1].metrics
    for key in ("loss/total", "loss/single", "loss/long", "loss/lm", "train/klr", "train/klf", "train/w_mean"):
        assert math.isfinite(first[key]), (key, first[key])
    # A 6-of-30-layer copy starts far from its teacher: the exact reverse KL is clearly positive.
    assert first["train/klr"] > 0.5, first["train/klr"]
    assert 0 < first["train/w_min"] <= first["train/w_max"] <= 1.25 + 1e-5
    assert {"eval/klr", "eval/klf", "eval/nll", "eval/rouge_l", "eval/length"} <= set(last)
    assert len(reports[-1].samples) == 2 and all(s["reference"] for s in reports[-1].samples)
    print({k: round(v, 3) for k, v in last.items() if k.startswith(("eval/", "train/kl", "time/"))})
