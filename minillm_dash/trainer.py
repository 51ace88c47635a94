"""One run's step loop: rollout -> teacher forward -> student forward/backward -> metrics.

The trainer never touches the UI or the database: it reports every step through a callback and
checks a stop flag between steps, so the same loop serves the runner's threads, the command line
and the tests. All randomness comes from generators seeded by the run's seed, so the same seed and
config give identical metrics on CPU, whatever else runs in the process.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from minillm_dash import data, losses, rollout
from minillm_dash.config import RunConfig, TrainSettings
from minillm_dash.errors import ConfigError
from minillm_dash.evaluation import HeldoutEvaluator, peak_memory_mb
from minillm_dash.objective import ScoredLogits, compute_loss


@dataclass
class StepReport:
    """What one step (or evaluation) produced; `samples` only on evaluation steps."""

    step: int
    metrics: dict[str, float]
    samples: list[dict] = field(default_factory=list)


@dataclass
class RunOutcome:
    status: str  # done | cancelled | diverged
    steps_done: int
    message: str | None = None


Report = Callable[[StepReport], None]


def check_dataset_fits(cfg: RunConfig, dataset: data.PromptDataset) -> None:
    """Refuse, before any model work, a dataset that cannot serve this variant or split."""
    if len(dataset.records) <= cfg.train.heldout_size:
        raise ConfigError(f"the dataset has {len(dataset.records)} prompts; the held-out split of "
                          f"{cfg.train.heldout_size} must leave at least one for training", field="heldout_size")
    if cfg.variant.needs_references and not all(r.reference for r in dataset.records):
        raise ConfigError(f"variant '{cfg.variant.name}' trains on reference responses, but dataset "
                          f"'{dataset.name}' has prompts without one", field="variants")


def make_scheduler(optimizer: torch.optim.Optimizer, settings: TrainSettings) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant, linear decay to 0, or cosine decay to 0."""

    def factor(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        span = max(1, settings.steps - settings.warmup_steps)
        progress = min(1.0, (step - settings.warmup_steps) / span)
        if settings.lr_schedule == "linear":
            return 1.0 - progress
        if settings.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def logits_of(model: torch.nn.Module, batch: rollout.ScoredBatch) -> torch.Tensor:
    """Response logits in float32 (bf16 models on GPU), so every loss runs at one precision."""
    return rollout.response_logits(model, batch).float()


class RunTrainer:
    """Trains one student against a shared, frozen teacher for `cfg.train.steps` steps."""

    def __init__(self, cfg: RunConfig, teacher: torch.nn.Module | None, student: torch.nn.Module, tokenizer,
                 dataset: data.PromptDataset, device: torch.device):
        check_dataset_fits(cfg, dataset)
        self.cfg, self.teacher, self.student, self.tokenizer, self.device = cfg, teacher, student, tokenizer, device
        self.settings = cfg.train
        train_records, heldout = data.split_train_heldout(list(dataset.records), cfg.train.heldout_size, cfg.data_seed)
        self.train_records = train_records
        self.batches = data.batches(train_records, cfg.train.batch_size, cfg.data_seed)
        self.evaluator = (HeldoutEvaluator(heldout, tokenizer, teacher, cfg.train, device, cfg.seed)
                          if heldout and teacher is not None else None)
        self.sample_gen = torch.Generator(device=device).manual_seed(cfg.seed)
        self.yardstick_gen = torch.Generator(device=device).manual_seed(cfg.seed + 7919)
        self.source_rng = random.Random(cfg.seed)
        self.optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, cfg.train)
        self.tokens_seen = 0
        self.eos = tokenizer.eos_token_id
        self.pad = data.pad_token_id(tokenizer)

    # ----------------------------------------------------------------- loop
    def run(self, report: Report, should_stop: Callable[[], bool] = lambda: False) -> RunOutcome:
        self.student.train()
        for step in range(1, self.settings.steps + 1):
            if should_stop():
                return RunOutcome("cancelled", step - 1, f"cancelled before step {step}")
            metrics = self.train_step(step)
            if not math.isfinite(metrics["loss/total"]) or not math.isfinite(metrics.get("train/grad_norm", 0.0)):
                report(StepReport(step, metrics))
                bad = "loss" if not math.isfinite(metrics["loss/total"]) else "gradient norm"
                return RunOutcome("diverged", step, f"non-finite {bad} at step {step}")
            samples: list[dict] = []
            if self.evaluator and (step % self.settings.eval_every == 0 or step == self.settings.steps):
                eval_metrics, samples = self.evaluator.evaluate(self.student)
                metrics.update(eval_metrics)
            report(StepReport(step, metrics, samples))
        return RunOutcome("done", self.settings.steps)

    def train_step(self, step: int) -> dict[str, float]:
        start = time.perf_counter()
        records = next(self.batches)
        prompt_ids, prompt_mask = self._encode_prompts(records)
        source = self._source_for_step()
        try:
            batch = self._scored_batch(source, records, prompt_ids, prompt_mask)
        except RuntimeError:
            # A student whose weights went non-finite cannot even sample: that is divergence, not failure.
            if self._student_is_finite():
                raise
            return {"loss/total": float("nan")}
        timings = {"sampling": batch.timings.get("sampling", 0.0)}

        t0 = time.perf_counter()
        teacher_logits = None
        yardstick_step = step % self.settings.yardstick_every == 0 or step == 1
        reuse_for_yardstick = yardstick_step and batch.source == "student"
        if self._needs_teacher_logits() or reuse_for_yardstick:
            with torch.no_grad():
                teacher_logits = logits_of(self.teacher, batch)
        timings["teacher"] = time.perf_counter() - t0
        yardsticks: dict[str, float] = {}
        if yardstick_step and not reuse_for_yardstick:
            yardsticks = self._sampled_yardsticks(prompt_ids, prompt_mask, timings)

        t0 = time.perf_counter()
        student_logits = logits_of(self.student, batch)
        lm_loss = self._lm_loss(records, prompt_ids, prompt_mask)
        terms = compute_loss(self.cfg.variant, ScoredLogits(
            student_logits=student_logits, teacher_logits=teacher_logits, response_ids=batch.response_ids,
            mask=batch.response_mask, old_logprobs=batch.old_logprobs, teacher_logprobs=batch.teacher_logprobs,
            weights=batch.weights if batch.source == "mixed" else None), lm_loss=lm_loss)
        metrics = {"loss/total": float(terms.total.detach())}
        metrics.update({f"loss/{name}": value for name, value in terms.terms.items()})
        if not math.isfinite(metrics["loss/total"]):
            return metrics
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        timings["student"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        max_norm = self.settings.grad_clip if self.settings.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.student.parameters(), max_norm))
        metrics["train/lr"] = self.scheduler.get_last_lr()[0]
        if math.isfinite(grad_norm):
            self.optimizer.step()
            self.scheduler.step()
        timings["optimizer"] = time.perf_counter() - t0

        metrics.update(self._batch_metrics(batch, student_logits.detach(), terms.clip_fraction))
        metrics["train/grad_norm"] = grad_norm
        if reuse_for_yardstick:
            yardsticks = exact_kls(student_logits.detach(), teacher_logits, batch.response_mask)
        metrics.update(yardsticks)
        timings["step"] = time.perf_counter() - start
        n_tokens = float(batch.response_mask.sum())
        self.tokens_seen += int(n_tokens)
        metrics["train/tokens_seen"] = float(self.tokens_seen)
        metrics["train/tokens_per_s"] = n_tokens / timings["step"] if timings["step"] > 0 else 0.0
        metrics.update({f"time/{name}": value for name, value in timings.items()})
        metrics["mem/peak_mb"] = peak_memory_mb(self.device)
        return metrics

    # ----------------------------------------------------------- pieces
    def _needs_teacher_logits(self) -> bool:
        """Full teacher distributions are needed by divergences and the single-step term only
        (seqkd's CE and the long-term term use the rollout's per-token teacher log-probs)."""
        v = self.cfg.variant
        return (v.divergence is not None and v.divergence_coef > 0) or v.single != "off"

    def _student_is_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.student.parameters())

    def _encode_prompts(self, records: list[data.PromptRecord]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = data.encode_records(self.tokenizer, records, self.settings.max_prompt_tokens)
        return ids.to(self.device), mask.to(self.device)

    def _source_for_step(self) -> str:
        """GKD draws its source each step (student with probability λ, else references)."""
        v = self.cfg.variant
        if v.gkd_student_prob is None:
            return v.source
        return "student" if self.source_rng.random() < v.gkd_student_prob else "reference"

    def _scored_batch(self, source: str, records, prompt_ids, prompt_mask) -> rollout.ScoredBatch:
        if source == "reference":
            return self._reference_batch(records, prompt_ids, prompt_mask)
        return rollout.sample_responses(
            self.student, self.teacher, prompt_ids, prompt_mask, source=source,
            max_new_tokens=self.settings.max_new_tokens, mix_alpha=self.cfg.variant.mix_alpha,
            eos_token_id=self.eos, pad_token_id=self.pad, generator=self.sample_gen)

    def _reference_batch(self, records, prompt_ids, prompt_mask) -> rollout.ScoredBatch:
        ref_ids, ref_mask = data.encode_references(self.tokenizer, [r.reference for r in records],
                                                   self.settings.max_new_tokens, self.eos)
        return rollout.reference_batch(prompt_ids, prompt_mask, ref_ids.to(self.device), ref_mask.to(self.device))

    def _lm_loss(self, records, prompt_ids, prompt_mask) -> torch.Tensor | None:
        """λ_lm term: student CE on the reference responses of the batch's prompts that have one."""
        if self.cfg.variant.lm_coef <= 0:
            return None
        keep = [i for i, r in enumerate(records) if r.reference]
        if not keep:
            return None
        index = torch.tensor(keep, device=self.device)
        batch = self._reference_batch([records[i] for i in keep], prompt_ids[index], prompt_mask[index])
        logits = logits_of(self.student, batch)
        return losses.cross_entropy(logits, batch.response_ids, batch.response_mask.to(logits.dtype))

    def _batch_metrics(self, batch: rollout.ScoredBatch, student_logits: torch.Tensor,
                       clip_fraction: float | None) -> dict[str, float]:
        mask = batch.response_mask.to(student_logits.dtype)
        metrics = {
            "train/entropy": float(losses.masked_mean(losses.entropy(student_logits), mask)),
            "train/response_len": float(mask.sum(dim=1).mean()),
        }
        if batch.source == "mixed" and batch.weights is not None:
            valid = batch.weights[batch.response_mask.bool()]
            if valid.numel():
                metrics.update({"train/w_mean": float(valid.mean()), "train/w_min": float(valid.min()),
                                "train/w_max": float(valid.max())})
        if clip_fraction is not None:
            metrics["train/clip_frac"] = clip_fraction
        return metrics

    def _sampled_yardsticks(self, prompt_ids, prompt_mask, timings: dict[str, float]) -> dict[str, float]:
        """Yardsticks for variants that train on other sequences: sample the student's own responses
        (before this step's update, like the reused training batch of student-sampled variants)."""
        if self.teacher is None:
            return {}
        t0 = time.perf_counter()
        with torch.no_grad():
            batch = rollout.sample_responses(
                self.student, self.teacher, prompt_ids, prompt_mask, source="student",
                max_new_tokens=self.settings.max_new_tokens, eos_token_id=self.eos, pad_token_id=self.pad,
                generator=self.yardstick_gen)
            teacher_logits = logits_of(self.teacher, batch)
            was_training = self.student.training
            self.student.eval()
            student_logits = logits_of(self.student, batch)
            self.student.train(was_training)
        timings["yardstick"] = time.perf_counter() - t0
        return exact_kls(student_logits, teacher_logits, batch.response_mask)


def exact_kls(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """The common yardsticks: exact token-level reverse and forward KL over the full vocabulary."""
    mask = mask.to(student_logits.dtype)
    with torch.no_grad():
        klr = losses.masked_mean(losses.token_divergence("rkl", student_logits, teacher_logits), mask)
        klf = losses.masked_mean(losses.token_divergence("fkl", student_logits, teacher_logits), mask)
    return {"train/klr": float(klr), "train/klf": float(klf)}
