"""The variant catalogue: every named preset of the spec as data, plus validated custom variants.

A variant says where the scored sequences come from (its data source) and which loss terms, with
which switches, are computed on them. Presets are plain `VariantConfig` values, so a custom variant
is the same object built from the same switches, and both go through one validator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from minillm_dash.errors import ConfigError, reject_unknown_keys

SOURCES = ("reference", "teacher", "student", "mixed")
DIVERGENCES = ("fkl", "rkl", "jsd", "tvd", "skl", "srkl", "akl")
SINGLE_SETTINGS = ("off", "unweighted", "weighted")
MINILLM_SOURCES = ("student", "mixed")


@dataclass(frozen=True)
class VariantConfig:
    """All switches of one loss variant; defaults are a plain reverse-KL run on student samples."""

    name: str = "custom"
    source: str = "student"
    # With probability `gkd_student_prob` a step uses student samples, else `reference` (GKD's λ).
    gkd_student_prob: float | None = None
    # Cross-entropy of the student on the scored sequences (sft, seqkd, the CE half of kd).
    ce_coef: float = 0.0
    # Token divergence on the scored sequences.
    divergence: str | None = None
    divergence_coef: float = 1.0
    beta: float = 0.5  # jsd
    skew_alpha: float = 0.1  # skl / srkl
    mu: float = 0.5  # akl
    loss_temperature: float = 1.0
    # MiniLLM terms.
    single: str = "off"
    long_term: bool = False
    gamma: float = 0.95
    include_current: bool = True
    length_norm: bool = True
    whiten: bool = True
    clip: float = 0.2
    mix_alpha: float = 0.2  # teacher-mixing α of the `mixed` source
    lm_coef: float = 0.0  # λ_lm: CE on reference responses (when the dataset has them)

    @property
    def uses_minillm(self) -> bool:
        return self.single != "off" or self.long_term

    @property
    def needs_teacher(self) -> bool:
        """sft needs no teacher at all; every other variant scores or samples with it."""
        return self.source in ("teacher", "mixed") or self.divergence is not None or self.uses_minillm

    @property
    def needs_references(self) -> bool:
        return self.source == "reference" or self.gkd_student_prob is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VariantConfig":
        reject_unknown_keys(data, {f.name for f in dataclasses.fields(cls)}, what="variant switch(es)",
                            field="variant")
        return validate_variant(cls(**data))


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str  # one line for the UI's checkbox help
    config: VariantConfig


def _minillm(name: str, **switches: Any) -> VariantConfig:
    """LMOps MiniLLM defaults; each preset changes only what distinguishes it."""
    base = dict(name=name, source="mixed", single="unweighted", long_term=True, gamma=0.95,
                include_current=True, mix_alpha=0.2, lm_coef=1.0)
    base.update(switches)
    return VariantConfig(**base)


def _divergence(name: str) -> VariantConfig:
    return VariantConfig(name=name, source="student", divergence=name)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("sft", "cross-entropy on the dataset's reference responses; no teacher",
               VariantConfig(name="sft", source="reference", ce_coef=1.0)),
        Preset("kd", "word-level KD on references: 0.5·CE + 0.5·forward KL",
               VariantConfig(name="kd", source="reference", ce_coef=0.5, divergence="fkl", divergence_coef=0.5)),
        Preset("seqkd", "sequence-level KD: cross-entropy on responses sampled from the teacher",
               VariantConfig(name="seqkd", source="teacher", ce_coef=1.0)),
        Preset("fkl", "forward KL(p‖q) per token (mode-covering)", _divergence("fkl")),
        Preset("rkl", "reverse KL(q‖p) per token (mode-seeking, MiniLLM's objective)", _divergence("rkl")),
        Preset("jsd", "generalised Jensen-Shannon(β); β=0 is defined as forward KL, β=1 as reverse KL",
               _divergence("jsd")),
        Preset("tvd", "total variation distance ½Σ|p−q|", _divergence("tvd")),
        Preset("skl", "skew forward KL(p‖αp+(1−α)q)", _divergence("skl")),
        Preset("srkl", "skew reverse KL(q‖(1−α)p+αq)", _divergence("srkl")),
        Preset("akl", "adaptive KL: head/tail-weighted mix of forward and reverse KL", _divergence("akl")),
        Preset("gkd", "GKD: on-policy student samples with prob. λ=0.5 (else references), JSD(β=0.5)",
               VariantConfig(name="gkd", source="student", gkd_student_prob=0.5, divergence="jsd", beta=0.5)),
        Preset("minillm", "MiniLLM as in LMOps: mixed α=0.2, single unweighted + long (s=t, γ=0.95), λ_lm=1",
               _minillm("minillm")),
        Preset("minillm_paper", "MiniLLM as in the paper (Eq. 7): single weighted by w_t, long from t+1, γ=1",
               _minillm("minillm_paper", single="weighted", include_current=False, gamma=1.0, lm_coef=0.0)),
        Preset("minillm_wsingle", "as minillm but single-step term weighted by w_t: the w_t question",
               _minillm("minillm_wsingle", single="weighted")),
        Preset("minillm_nomix", "as minillm without teacher mixing (student samples, w ≡ 1)",
               _minillm("minillm_nomix", source="student")),
        Preset("single_only", "MiniLLM single-step term only (unweighted), student samples",
               VariantConfig(name="single_only", source="student", single="unweighted")),
        Preset("long_only", "MiniLLM long-term policy-gradient term only, mixed α=0.2",
               _minillm("long_only", single="off", lm_coef=0.0)),
    ]
}

# The ready-made comparison of the w_t question (paper vs reference implementation).
WT_QUESTION_VARIANTS = ("minillm", "minillm_wsingle")


def preset(preset_name: str, /, **overrides: Any) -> VariantConfig:
    """A named preset, optionally with switches changed (and then validated)."""
    if preset_name not in PRESETS:
        raise ConfigError(f"unknown preset '{preset_name}'; choose one of {', '.join(PRESETS)}", field="variant")
    config = PRESETS[preset_name].config
    if overrides:
        config = VariantConfig.from_dict({**config.to_dict(), **overrides})
    return validate_variant(config)


def _require(condition: bool, message: str, field: str) -> None:
    if not condition:
        raise ConfigError(message, field=field)


def validate_variant(v: VariantConfig) -> VariantConfig:
    """Refuse combinations the spec does not define, naming the offending switch."""
    _require(bool(v.name.strip()), "a variant needs a name", "name")
    _require(v.source in SOURCES, f"unknown data source '{v.source}'; choose one of {SOURCES}", "source")
    _require(v.divergence is None or v.divergence in DIVERGENCES,
             f"unknown divergence '{v.divergence}'; choose one of {DIVERGENCES}", "divergence")
    _require(v.single in SINGLE_SETTINGS, f"single must be one of {SINGLE_SETTINGS}, got '{v.single}'", "single")
    _require(0.0 <= v.beta <= 1.0, f"β must lie in [0, 1], got {v.beta}", "beta")
    _require(0.0 <= v.skew_alpha < 1.0, f"skew α must lie in [0, 1), got {v.skew_alpha}", "skew_alpha")
    _require(0.0 < v.mu <= 1.0, f"μ must lie in (0, 1], got {v.mu}", "mu")
    _require(v.loss_temperature > 0, f"loss temperature must be > 0, got {v.loss_temperature}", "loss_temperature")
    _require(0.0 <= v.mix_alpha < 1.0, f"mixing α must lie in [0, 1), got {v.mix_alpha}", "mix_alpha")
    _require(0.0 < v.gamma <= 1.0, f"γ must lie in (0, 1], got {v.gamma}", "gamma")
    _require(v.clip > 0, f"clip ε must be > 0, got {v.clip}", "clip")
    for field in ("ce_coef", "divergence_coef", "lm_coef"):
        _require(getattr(v, field) >= 0, f"{field} must be ≥ 0, got {getattr(v, field)}", field)
    if v.gkd_student_prob is not None:
        _require(0.0 <= v.gkd_student_prob <= 1.0,
                 f"GKD student probability λ must lie in [0, 1], got {v.gkd_student_prob}", "gkd_student_prob")
        _require(v.source == "student", "GKD mixing of sources needs source 'student'", "source")
    if v.uses_minillm:
        _require(v.source in MINILLM_SOURCES,
                 f"MiniLLM terms need sampled sequences (source 'student' or 'mixed'), not '{v.source}'", "source")
        _require(v.gkd_student_prob is None, "MiniLLM terms cannot be combined with GKD source mixing",
                 "gkd_student_prob")
    has_term = v.ce_coef > 0 or (v.divergence is not None and v.divergence_coef > 0) or v.uses_minillm
    _require(has_term, "the variant has no loss term: set a divergence, a CE coefficient or a MiniLLM term", "name")
    _require(not (v.source == "mixed" and not v.uses_minillm and v.mix_alpha == 0.0),
             "source 'mixed' with α=0 is plain student sampling; use source 'student'", "mix_alpha")
    return v


def describe(v: VariantConfig) -> str:
    """A one-line human summary of what a (possibly custom) variant computes."""
    terms = []
    if v.ce_coef:
        terms.append(f"{v.ce_coef:g}·CE")
    if v.divergence:
        terms.append(f"{v.divergence_coef:g}·{v.divergence}")
    if v.single != "off":
        terms.append(f"single({v.single})")
    if v.long_term:
        start = "t" if v.include_current else "t+1"
        terms.append(f"long(s={start}, γ={v.gamma:g})")
    if v.lm_coef:
        terms.append(f"{v.lm_coef:g}·LM")
    source = f"mixed α={v.mix_alpha:g}" if v.source == "mixed" else v.source
    if v.gkd_student_prob is not None:
        source = f"student w.p. {v.gkd_student_prob:g} else reference"
    return f"{' + '.join(terms)} on {source}"
