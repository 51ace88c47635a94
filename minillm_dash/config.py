"""Run and experiment configuration: plain frozen dataclasses, validated before any thread starts.

An experiment is variants × seeds runs that share models, dataset and training settings, and see
the same prompts in the same order (the data order depends on `data_seed`, not on the run's seed),
so that the runs form a paired comparison.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minillm_dash.errors import ConfigError, reject_unknown_keys
from minillm_dash.variants import VariantConfig, preset, validate_variant

LR_SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class TrainSettings:
    """Hyperparameters shared by every run of an experiment; defaults suit a short CPU run."""

    steps: int = 20
    batch_size: int = 4
    lr: float = 5e-5
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    max_new_tokens: int = 32
    max_prompt_tokens: int = 128
    eval_every: int = 10
    heldout_size: int = 8
    eval_max_new_tokens: int = 32
    samples_logged: int = 3
    # Exact KLR/KLF of the student on its own samples are logged every `yardstick_every` steps; for
    # variants that train on other sequences this costs an extra student sampling pass.
    yardstick_every: int = 1
    device: str | None = None
    # Save each finished student under models/students/ (loadable by from_pretrained).
    save_students: bool = False

    def validate(self) -> "TrainSettings":
        positive_ints = ("steps", "batch_size", "max_new_tokens", "max_prompt_tokens", "eval_every",
                         "eval_max_new_tokens", "yardstick_every")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"must be a positive integer, got {value!r}", field=name)
        for name in ("warmup_steps", "heldout_size", "samples_logged"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"must be a non-negative integer, got {value!r}", field=name)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"learning rate must be a positive number, got {self.lr!r}", field="lr")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown schedule '{self.lr_schedule}'; choose one of {LR_SCHEDULES}",
                              field="lr_schedule")
        if not (self.grad_clip >= 0 and math.isfinite(self.grad_clip)):
            raise ConfigError(f"must be ≥ 0 (0 disables clipping), got {self.grad_clip}", field="grad_clip")
        if not (self.weight_decay >= 0):
            raise ConfigError(f"must be ≥ 0, got {self.weight_decay}", field="weight_decay")
        return self


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs, stored with the run so a history can always be traced back."""

    teacher: str
    student: str
    variant: VariantConfig
    seed: int
    train: TrainSettings
    data_seed: int = 0
    # Run code shipped with hub/local models; off unless the user explicitly asks for it.
    trust_remote_code: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        return cls(teacher=data["teacher"], student=data["student"],
                   variant=VariantConfig.from_dict(data["variant"]), seed=int(data["seed"]),
                   train=TrainSettings(**data["train"]).validate(), data_seed=int(data.get("data_seed", 0)),
                   trust_remote_code=data.get("trust_remote_code") is True)


@dataclass(frozen=True)
class ExperimentConfig:
    """variants × seeds runs on one dataset (None: the built-in prompt set) and one model pair."""

    name: str
    variants: tuple[VariantConfig, ...]
    seeds: tuple[int, ...] = (0,)
    teacher: str = "default"
    student: str = "pruned:6"
    dataset_id: int | None = None
    train: TrainSettings = field(default_factory=TrainSettings)
    data_seed: int = 0
    trust_remote_code: bool = False

    def validate(self) -> "ExperimentConfig":
        if not self.name.strip():
            raise ConfigError("an experiment needs a name", field="name")
        if not self.variants:
            raise ConfigError("choose at least one variant", field="variants")
        names = [v.name for v in self.variants]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"variant names must be unique within an experiment: {duplicates}", field="variants")
        for v in self.variants:
            validate_variant(v)
        if not self.seeds:
            raise ConfigError("give at least one seed", field="seeds")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct, got {list(self.seeds)}", field="seeds")
        if not self.teacher.strip():
            raise ConfigError("choose a teacher model", field="teacher")
        if not self.student.strip():
            raise ConfigError("choose a student model", field="student")
        if not isinstance(self.trust_remote_code, bool):
            raise ConfigError(f"must be true or false, got {self.trust_remote_code!r}", field="trust_remote_code")
        self.train.validate()
        return self

    def runs(self) -> list[RunConfig]:
        return [RunConfig(teacher=self.teacher, student=self.student, variant=v, seed=s, train=self.train,
                          data_seed=self.data_seed, trust_remote_code=self.trust_remote_code)
                for v in self.variants for s in self.seeds]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentConfig":
        """Build from a parsed YAML/JSON file: variants are preset names or switch dictionaries."""
        reject_unknown_keys(data, {f.name for f in dataclasses.fields(cls)}, what="key(s)", field="config")
        variants = tuple(_variant_from_entry(entry) for entry in data.get("variants", ()))
        train_data = data.get("train", {}) or {}
        reject_unknown_keys(train_data, {f.name for f in dataclasses.fields(TrainSettings)},
                            what="training setting(s)", field="train")
        seeds = data.get("seeds", (0,))
        return cls(name=str(data.get("name", "experiment")), variants=variants,
                   seeds=tuple(int(s) for s in seeds), teacher=str(data.get("teacher", "default")),
                   student=str(data.get("student", "pruned:6")), dataset_id=data.get("dataset_id"),
                   train=TrainSettings(**train_data), data_seed=int(data.get("data_seed", 0)),
                   trust_remote_code=data.get("trust_remote_code") is True).validate()


def _variant_from_entry(entry: Any) -> VariantConfig:
    """A variant entry is a preset name, or a dict with an optional `preset` plus switch overrides."""
    if isinstance(entry, str):
        return preset(entry)
    if isinstance(entry, dict):
        entry = dict(entry)
        base = entry.pop("preset", None)
        if base is not None:
            return preset(str(base), **entry)
        return VariantConfig.from_dict(entry)
    raise ConfigError(f"a variant must be a preset name or a mapping of switches, got {entry!r}", field="variants")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML or JSON experiment file into a dict, naming the file in any error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}", field="config") from exc
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ValueError(str(exc)) from exc
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}", field="config") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, not {type(data).__name__}", field="config")
    return data
