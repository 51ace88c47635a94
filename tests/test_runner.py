"""The runner on tiny real models and a real SQLite database: runs side by side in threads, faults
confined to their run, bad experiments refused before any thread starts with nothing stored."""

import dataclasses
import gc
import math
import threading

import pytest
import torch
from transformers import LlamaForCausalLM

from minillm_dash import tiny
from minillm_dash.config import ExperimentConfig, RunConfig, TrainSettings
from minillm_dash.errors import ConfigError, ModelLoadError, UserInputError, VocabularyMismatchError
from minillm_dash.modeling import save_student
from minillm_dash.runner import Runner, TeacherCache
from minillm_dash.variants import preset

FAST = TrainSettings(steps=3, batch_size=2, lr=1e-3, max_new_tokens=5, max_prompt_tokens=32, eval_every=3,
                     heldout_size=2, eval_max_new_tokens=5, samples_logged=1)


def _exp(variants=("minillm", "minillm_wsingle"), seeds=(0,), train=FAST, **kw):
    vs = tuple(v if not isinstance(v, str) else preset(v) for v in variants)
    return ExperimentConfig(name="t", variants=vs, seeds=seeds, teacher="tiny", student="pruned:2", train=train, **kw)


@pytest.fixture
def runner(tmp_db):
    r = Runner(tmp_db, max_concurrent=2)
    yield r
    r.shutdown(cancel=True)


def test_two_variants_train_side_by_side_and_store_everything(runner, tmp_db):
    exp_id = runner.launch(_exp(seeds=(0, 1)))
    assert runner.wait(timeout=240)
    runs = tmp_db.list_runs(exp_id)
    assert sorted((r["variant"], r["seed"]) for r in runs) == [
        ("minillm", 0), ("minillm", 1), ("minillm_wsingle", 0), ("minillm_wsingle", 1)]
    assert all(r["status"] == "done" for r in runs), runs
    ids = [r["id"] for r in runs]
    assert tmp_db.max_steps(ids) == {i: 3 for i in ids}
    names = set(tmp_db.metric_names(ids))
    assert {"loss/total", "loss/single", "loss/long", "train/klr", "train/w_mean", "eval/klr", "eval/rouge_l"} <= names
    assert all(tmp_db.samples(i) for i in ids)
    print(f"stored {tmp_db.count_metrics(ids)} metric rows for {len(ids)} runs")


def test_a_diverging_run_is_marked_and_the_others_finish(runner, tmp_db):
    # A loss temperature of 1e-300 overflows the logits: a genuine non-finite loss from user settings.
    broken = preset("rkl", name="rkl_overflow", loss_temperature=1e-300)
    exp_id = runner.launch(_exp(variants=(broken, preset("fkl"))))
    assert runner.wait(timeout=240)
    by_name = {r["variant"]: r for r in tmp_db.list_runs(exp_id)}
    assert by_name["rkl_overflow"]["status"] == "diverged" and "step 1" in by_name["rkl_overflow"]["error"]
    assert by_name["fkl"]["status"] == "done"
    rows = tmp_db.metric_rows([by_name["rkl_overflow"]["id"]], names=["loss/total", "train/grad_norm"])
    assert {r[1] for r in rows} == {1}, rows  # its history is kept up to the step that diverged
    assert any(not math.isfinite(r[3]) for r in rows), rows


def test_an_exception_marks_only_that_run_failed(tmp_db, monkeypatch):
    from minillm_dash import trainer as trainer_module

    original = trainer_module.RunTrainer.train_step

    def train_step(self, step):
        if self.cfg.variant.name == "fkl" and step == 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return original(self, step)

    monkeypatch.setattr(trainer_module.RunTrainer, "train_step", train_step)
    runner = Runner(tmp_db, max_concurrent=2)
    try:
        exp_id = runner.launch(_exp(variants=("fkl", "rkl")))
        assert runner.wait(timeout=240)
        (teacher, _), = runner.teachers._models.values()
        before = {k: v.clone() for k, v in teacher.state_dict().items()}
        exp2 = runner.launch(_exp(variants=("minillm",)))
        assert runner.wait(timeout=240)
    finally:
        runner.shutdown()
    by_name = {r["variant"]: r for r in tmp_db.list_runs(exp_id)}
    assert by_name["fkl"]["status"] == "failed" and "out of memory (injected)" in by_name["fkl"]["error"]
    assert by_name["rkl"]["status"] == "done"
    assert tmp_db.max_steps([by_name["fkl"]["id"]]) == {by_name["fkl"]["id"]: 1}
    # The failed run's student, optimizer and activations are gone: only the shared teacher stays alive.
    gc.collect()
    alive = [o for o in gc.get_objects() if type(o) is LlamaForCausalLM]
    assert len(alive) == 1 and alive[0] is teacher, f"{len(alive)} models still alive"
    # The teacher is shared by every run (one cached copy) and unchanged by all of them.
    assert len(runner.teachers._models) == 1 and [r["status"] for r in tmp_db.list_runs(exp2)] == ["done"]
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_cancel_queued_and_running_runs(tmp_db):
    runner = Runner(tmp_db, max_concurrent=1)
    try:
        long = TrainSettings(**{**FAST.__dict__, "steps": 200, "eval_every": 1000})
        exp_id = runner.launch(_exp(variants=("rkl", "fkl"), train=long))
        runs = {r["variant"]: r["id"] for r in tmp_db.list_runs(exp_id)}
        runner.cancel(runs["fkl"])  # still queued behind rkl
        deadline = threading.Event()
        while not tmp_db.max_steps([runs["rkl"]]).get(runs["rkl"]):
            deadline.wait(0.05)
        runner.cancel(runs["rkl"])
        step_at_cancel = tmp_db.max_steps([runs["rkl"]])[runs["rkl"]]
        assert runner.wait(timeout=60)
    finally:
        runner.shutdown()
    by_name = {r["variant"]: r for r in tmp_db.list_runs(exp_id)}
    assert by_name["fkl"]["status"] == "cancelled" and by_name["rkl"]["status"] == "cancelled"
    final = tmp_db.max_steps([runs["rkl"]])[runs["rkl"]]
    print(f"cancelled at step {step_at_cancel} (stored), stopped after step {final}")
    # The step in flight when cancel came finishes (its metrics may still be in the writer), then it stops.
    assert final <= step_at_cancel + 2 and by_name["rkl"]["step"] == final


def _other_vocab_student(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLM_DASH_MODELS", str(tmp_path / "models"))
    tok = tiny.tiny_tokenizer()
    tok.add_tokens(["<extra_token>"])
    model = tiny.tiny_model(3, 1, tok)
    return str(save_student(model, tok, "other-vocab"))


@pytest.mark.parametrize("case", ["unknown preset", "negative steps", "lr 0", "alpha 1", "vocabulary",
                                  "missing folder", "offline hub id", "heldout too large"])
def test_bad_experiments_are_refused_before_any_thread_and_store_nothing(case, tmp_db, tmp_path, monkeypatch):
    runner = Runner(tmp_db, max_concurrent=2, teachers=TeacherCache())
    kwargs = {}
    if case == "unknown preset":
        make = lambda: _exp(variants=(preset("minilm"),))  # noqa: E731
    elif case == "negative steps":
        make = lambda: _exp(train=TrainSettings(steps=-1))  # noqa: E731
    elif case == "lr 0":
        make = lambda: _exp(train=TrainSettings(lr=0.0))  # noqa: E731
    elif case == "alpha 1":
        make = lambda: _exp(variants=(preset("minillm", mix_alpha=1.0),))  # noqa: E731
    elif case == "vocabulary":
        folder = _other_vocab_student(tmp_path, monkeypatch)
        make = lambda: ExperimentConfig(name="t", variants=(preset("rkl"),), teacher="tiny", student=folder,  # noqa
                                        train=FAST)
    elif case == "missing folder":
        make = lambda: ExperimentConfig(name="t", variants=(preset("rkl"),), teacher="tiny",  # noqa: E731
                                        student=str(tmp_path / "no-such-model"), train=FAST)
    elif case == "offline hub id":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        make = lambda: ExperimentConfig(name="t", variants=(preset("rkl"),), teacher="someorg/some-model",  # noqa
                                        train=FAST)
    else:
        make = lambda: _exp(train=TrainSettings(**{**FAST.__dict__, "heldout_size": 500}))  # noqa: E731
    with pytest.raises(UserInputError) as err:
        runner.launch(make(), **kwargs)
    print(f"refused ({case}): {err.value}")
    expected = {"vocabulary": VocabularyMismatchError, "missing folder": ModelLoadError,
                "offline hub id": ModelLoadError}.get(case, ConfigError)
    assert isinstance(err.value, expected)
    assert tmp_db.list_experiments() == [] and tmp_db.list_runs() == []
    assert runner._workers == []


def test_trust_remote_code_reaches_the_loaders_only_when_asked(tmp_db, monkeypatch):
    from minillm_dash import runner as runner_module

    seen = []
    original = runner_module.ModelSource.parse

    def parse(text, *, trust_remote_code=False):
        seen.append((text, trust_remote_code))
        return original(text, trust_remote_code=trust_remote_code)

    monkeypatch.setattr(runner_module.ModelSource, "parse", staticmethod(parse))
    runner = Runner(tmp_db, max_concurrent=1)
    try:
        runner.launch(_exp(variants=("rkl",), train=TrainSettings(**{**FAST.__dict__, "steps": 1})))
        runner.launch(dataclasses.replace(_exp(variants=("fkl",), train=TrainSettings(**{**FAST.__dict__, "steps": 1})),
                                          trust_remote_code=True))
        assert runner.wait(timeout=120)
    finally:
        runner.shutdown()
    assert {flag for _, flag in seen[:2]} == {False}  # the first experiment's teacher and student
    assert ("tiny", True) in seen and ("pruned:2", True) in seen
    assert RunConfig.from_dict(tmp_db.list_runs()[1]["config"]).trust_remote_code is True
