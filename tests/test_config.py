"""Run/experiment configs: bad settings are refused with the field named; files round-trip."""

import json

import pytest

from minillm_dash.config import ExperimentConfig, RunConfig, TrainSettings, load_config_file
from minillm_dash.errors import ConfigError
from minillm_dash.variants import preset


def _exp(**overrides):
    base = dict(name="e", variants=(preset("minillm"), preset("minillm_wsingle")), seeds=(0, 1))
    base.update(overrides)
    return ExperimentConfig(**base)


def test_runs_are_variants_times_seeds_and_share_data_order():
    runs = _exp().validate().runs()
    assert [(r.variant.name, r.seed) for r in runs] == [
        ("minillm", 0), ("minillm", 1), ("minillm_wsingle", 0), ("minillm_wsingle", 1)]
    assert {r.data_seed for r in runs} == {0}


@pytest.mark.parametrize("settings, field", [
    (dict(steps=-1), "steps"), (dict(steps=0), "steps"), (dict(lr=0.0), "lr"), (dict(lr=float("nan")), "lr"),
    (dict(batch_size=0), "batch_size"), (dict(lr_schedule="exp"), "lr_schedule"), (dict(grad_clip=-1.0), "grad_clip"),
    (dict(heldout_size=-2), "heldout_size"), (dict(steps=2.5), "steps"),
])
def test_bad_training_settings_name_the_field(settings, field):
    with pytest.raises(ConfigError) as err:
        _exp(train=TrainSettings(**settings)).validate()
    assert err.value.field == field


def test_experiment_level_refusals():
    with pytest.raises(ConfigError, match="at least one variant"):
        _exp(variants=()).validate()
    with pytest.raises(ConfigError, match="unique"):
        _exp(variants=(preset("rkl"), preset("rkl"))).validate()
    with pytest.raises(ConfigError, match="distinct"):
        _exp(seeds=(1, 1)).validate()


def test_from_dict_accepts_presets_and_custom_switches():
    exp = ExperimentConfig.from_dict({
        "name": "x", "variants": ["minillm", {"preset": "jsd", "name": "jsd09", "beta": 0.9},
                                   {"name": "mine", "divergence": "tvd", "source": "mixed", "single": "weighted"}],
        "seeds": [3], "train": {"steps": 2}})
    assert [v.name for v in exp.variants] == ["minillm", "jsd09", "mine"]
    assert exp.variants[1].beta == 0.9 and exp.train.steps == 2
    with pytest.raises(ConfigError, match="unknown preset"):
        ExperimentConfig.from_dict({"variants": ["minilm"]})
    with pytest.raises(ConfigError, match="mix_alpha"):
        ExperimentConfig.from_dict({"variants": [{"preset": "minillm", "mix_alpha": 1.0}]})
    with pytest.raises(ConfigError, match="unknown training setting"):
        ExperimentConfig.from_dict({"variants": ["rkl"], "train": {"stepz": 3}})


def test_run_config_round_trips_through_json():
    run = _exp().validate().runs()[0]
    assert RunConfig.from_dict(json.loads(json.dumps(run.to_dict()))) == run


def test_config_files(tmp_path):
    good = tmp_path / "exp.yaml"
    good.write_text("name: y\nvariants: [rkl, fkl]\ntrain:\n  steps: 3\n")
    assert ExperimentConfig.from_dict(load_config_file(good)).train.steps == 3
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json is not valid json"):
        load_config_file(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- rkl\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config_file(listy)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "missing.yaml")
