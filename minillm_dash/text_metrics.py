"""Text metrics for held-out evaluation: ROUGE-L F1 of generated answers against references."""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from rouge_score import rouge_scorer


@lru_cache(maxsize=1)
def _scorer() -> rouge_scorer.RougeScorer:
    # The stemmer makes "runs"/"running" match, as in the MiniLLM paper's evaluation.
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_each(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L F1 per (prediction, reference) pair; an empty prediction scores 0."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    scorer = _scorer()
    return [scorer.score(ref, pred)["rougeL"].fmeasure if pred.strip() else 0.0
            for pred, ref in zip(predictions, references)]


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 over the pairs; raises ValueError on a length mismatch or no pairs."""
    scores = rouge_l_each(predictions, references)
    if not scores:
        raise ValueError("no predictions to score")
    return sum(scores) / len(scores)
