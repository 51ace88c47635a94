"""The preset catalogue matches the spec's table, and custom variants are validated with clear errors."""

import pytest

from minillm_dash.errors import ConfigError
from minillm_dash.variants import PRESETS, VariantConfig, describe, preset, validate_variant

SPEC_PRESETS = ["sft", "kd", "seqkd", "fkl", "rkl", "jsd", "tvd", "skl", "srkl", "akl", "gkd", "minillm",
                "minillm_paper", "minillm_wsingle", "minillm_nomix", "single_only", "long_only"]


def test_every_spec_preset_exists_and_validates():
    assert sorted(PRESETS) == sorted(SPEC_PRESETS)
    for name in SPEC_PRESETS:
        assert validate_variant(PRESETS[name].config).name == name
        assert PRESETS[name].summary


def test_minillm_presets_follow_the_spec_table():
    m = preset("minillm")
    assert (m.source, m.mix_alpha, m.single, m.long_term, m.include_current, m.gamma, m.lm_coef) == (
        "mixed", 0.2, "unweighted", True, True, 0.95, 1.0)
    paper = preset("minillm_paper")
    assert (paper.single, paper.include_current, paper.gamma, paper.source) == ("weighted", False, 1.0, "mixed")
    ws = preset("minillm_wsingle")
    # The one-switch comparison: identical to minillm except the single-step weighting (and its name).
    diff = {k for k, v in ws.to_dict().items() if m.to_dict()[k] != v}
    assert diff == {"name", "single"}
    nomix = preset("minillm_nomix")
    assert nomix.source == "student" and {k for k, v in nomix.to_dict().items() if m.to_dict()[k] != v} == {
        "name", "source"}
    assert preset("single_only").long_term is False and preset("single_only").single == "unweighted"
    lo = preset("long_only")
    assert lo.single == "off" and lo.long_term and lo.source == "mixed"


def test_classic_presets():
    assert preset("sft").needs_teacher is False and preset("sft").ce_coef == 1.0
    kd = preset("kd")
    assert (kd.source, kd.ce_coef, kd.divergence, kd.divergence_coef) == ("reference", 0.5, "fkl", 0.5)
    assert preset("seqkd").source == "teacher"
    gkd = preset("gkd")
    assert (gkd.gkd_student_prob, gkd.divergence, gkd.beta) == (0.5, "jsd", 0.5)
    for name in ["fkl", "rkl", "jsd", "tvd", "skl", "srkl", "akl"]:
        assert preset(name).divergence == name and preset(name).source == "student"


def test_overrides_are_validated():
    assert preset("rkl", source="reference").source == "reference"
    with pytest.raises(ConfigError, match="beta"):
        preset("jsd", beta=1.5)


@pytest.mark.parametrize(
    "switches, field",
    [
        (dict(divergence="jsd", beta=-0.1), "beta"),
        (dict(divergence="skl", skew_alpha=1.0), "skew_alpha"),
        (dict(source="mixed", single="unweighted", mix_alpha=1.0), "mix_alpha"),
        (dict(source="reference", single="unweighted"), "source"),
        (dict(source="teacher", long_term=True), "source"),
        (dict(divergence="nope"), "divergence"),
        (dict(source="somewhere", divergence="rkl"), "source"),
        (dict(single="sometimes"), "single"),
        (dict(), "name"),  # no loss term at all
        (dict(divergence="rkl", gamma=0.0), "gamma"),
        (dict(divergence="rkl", ce_coef=-1.0), "ce_coef"),
    ],
)
def test_invalid_custom_variants_name_the_switch(switches, field):
    with pytest.raises(ConfigError) as err:
        validate_variant(VariantConfig(**switches))
    assert err.value.field == field
    assert field in str(err.value)


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ConfigError, match="unknown preset 'minilm'.*minillm_wsingle"):
        preset("minilm")


def test_from_dict_refuses_unknown_switches():
    with pytest.raises(ConfigError, match="unknown variant switch"):
        VariantConfig.from_dict({"divergence": "rkl", "temprature": 2.0})
    v = VariantConfig.from_dict(preset("minillm").to_dict())
    assert v == preset("minillm")


def test_describe_names_the_terms():
    assert describe(preset("minillm")) == "single(unweighted) + long(s=t, γ=0.95) + 1·LM on mixed α=0.2"
    assert "student w.p. 0.5" in describe(preset("gkd"))
