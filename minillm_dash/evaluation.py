"""Held-out evaluation: the same yardsticks for every variant, so their curves are comparable.

KLR on fresh student samples, KLF and NLL on reference responses (teacher-forced), ROUGE-L of
greedy student outputs against references, mean generated length. Where the dataset has no
references, the teacher's greedy outputs (computed once per run) stand in for them.
"""

from __future__ import annotations

import resource
import sys

import torch

from minillm_dash import data, losses, rollout, text_metrics
from minillm_dash.config import TrainSettings


def peak_memory_mb(device: torch.device) -> float:
    """Peak accelerator memory on CUDA; peak resident memory of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def _masked_sum(values: torch.Tensor, mask: torch.Tensor) -> float:
    """Sum over real tokens only; an inf at padding must not turn into NaN through inf·0."""
    return float(torch.where(mask.bool(), values, torch.zeros_like(values)).sum())


class HeldoutEvaluator:
    """Scores a student on a fixed held-out prompt split; sampling is seeded per call (paired)."""

    def __init__(self, records: list[data.PromptRecord], tokenizer, teacher: torch.nn.Module,
                 settings: TrainSettings, device: torch.device, seed: int):
        self.records, self.tokenizer, self.teacher = records, tokenizer, teacher
        self.settings, self.device, self.seed = settings, device, seed
        self.eos = tokenizer.eos_token_id
        self.pad = data.pad_token_id(tokenizer)
        self._references: list[str] | None = None

    def _chunks(self) -> list[list[data.PromptRecord]]:
        size = self.settings.batch_size
        return [self.records[i:i + size] for i in range(0, len(self.records), size)]

    def _encode(self, records: list[data.PromptRecord]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = data.encode_records(self.tokenizer, records, self.settings.max_prompt_tokens)
        return ids.to(self.device), mask.to(self.device)

    def _greedy_texts(self, model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> tuple[list[str], float]:
        out_ids, out_mask = rollout.greedy_generate(model, ids, mask, self.settings.eval_max_new_tokens,
                                                    eos_token_id=self.eos, pad_token_id=self.pad)
        texts = [self.tokenizer.decode(row[m.bool()], skip_special_tokens=True) for row, m in zip(out_ids, out_mask)]
        return texts, float(out_mask.sum())

    def references(self) -> list[str]:
        """Dataset references, or the teacher's greedy answers where a prompt has none (computed once)."""
        if self._references is None:
            refs: list[str] = []
            for chunk in self._chunks():
                missing = [r for r in chunk if not r.reference]
                teacher_texts = iter(self._greedy_texts(self.teacher, *self._encode(missing))[0]) if missing else iter(())
                refs.extend(r.reference if r.reference else next(teacher_texts) for r in chunk)
            self._references = refs
        return self._references

    @torch.no_grad()
    def evaluate(self, student: torch.nn.Module) -> tuple[dict[str, float], list[dict]]:
        was_training = student.training
        student.eval()
        try:
            return self._evaluate(student)
        finally:
            student.train(was_training)

    def _evaluate(self, student: torch.nn.Module) -> tuple[dict[str, float], list[dict]]:
        generator = torch.Generator(device=self.device).manual_seed(self.seed + 104729)
        references = self.references()
        sums = {"klr": 0.0, "klr_n": 0.0, "klf": 0.0, "nll": 0.0, "ref_n": 0.0, "len": 0.0}
        predictions: list[str] = []
        for i, chunk in enumerate(self._chunks()):
            ids, mask = self._encode(chunk)
            sampled = rollout.sample_responses(student, self.teacher, ids, mask, source="student",
                                               max_new_tokens=self.settings.eval_max_new_tokens,
                                               eos_token_id=self.eos, pad_token_id=self.pad, generator=generator)
            s_logits, t_logits = rollout.response_logits(student, sampled).float(), rollout.response_logits(
                self.teacher, sampled).float()
            m = sampled.response_mask.to(s_logits.dtype)
            sums["klr"] += _masked_sum(losses.token_divergence("rkl", s_logits, t_logits), m)
            sums["klr_n"] += float(m.sum())

            chunk_refs = references[i * self.settings.batch_size:][:len(chunk)]
            ref_ids, ref_mask = data.encode_references(self.tokenizer, chunk_refs, self.settings.eval_max_new_tokens,
                                                       self.eos)
            forced = rollout.reference_batch(ids, mask, ref_ids.to(self.device), ref_mask.to(self.device))
            s_logits, t_logits = rollout.response_logits(student, forced).float(), rollout.response_logits(
                self.teacher, forced).float()
            m = forced.response_mask.to(s_logits.dtype)
            sums["klf"] += _masked_sum(losses.token_divergence("fkl", s_logits, t_logits), m)
            sums["nll"] += _masked_sum(-losses.token_logprobs(s_logits, forced.response_ids), m)
            sums["ref_n"] += float(m.sum())

            texts, n_tokens = self._greedy_texts(student, ids, mask)
            predictions.extend(texts)
            sums["len"] += n_tokens
        n = len(self.records)
        metrics = {
            "eval/klr": sums["klr"] / max(sums["klr_n"], 1.0),
            "eval/klf": sums["klf"] / max(sums["ref_n"], 1.0),
            "eval/nll": sums["nll"] / max(sums["ref_n"], 1.0),
            "eval/rouge_l": text_metrics.rouge_l(predictions, references),
            "eval/length": sums["len"] / n,
        }
        samples = [{"prompt": r.prompt if r.prompt is not None else r.messages[-1]["content"],
                    "text": text, "reference": ref}
                   for r, text, ref in list(zip(self.records, predictions, references))[:self.settings.samples_logged]]
        return metrics, samples
