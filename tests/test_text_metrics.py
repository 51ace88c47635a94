"""ROUGE-L against a naive LCS implementation written here."""

from __future__ import annotations

import random
import re

import pytest

from minillm_dash.text_metrics import rouge_l, rouge_l_each


def naive_rouge_l(pred: str, ref: str) -> float:
    """F1 of LCS precision/recall over lower-cased alphanumeric tokens (rouge_score's tokenisation)."""
    p = re.sub(r"[^a-z0-9]+", " ", pred.lower()).split()
    r = re.sub(r"[^a-z0-9]+", " ", ref.lower()).split()
    if not p or not r:
        return 0.0
    table = [[0] * (len(r) + 1) for _ in range(len(p) + 1)]
    for i, a in enumerate(p):
        for j, b in enumerate(r):
            table[i + 1][j + 1] = table[i][j] + 1 if a == b else max(table[i][j + 1], table[i + 1][j])
    lcs = table[-1][-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


# Words of at most 3 letters are left alone by the Porter stemmer, so the naive version needs none.
WORDS = "the cat sat on a mat dog ran to big red box and hat".split()


def test_matches_naive_lcs_on_random_texts():
    rng = random.Random(0)
    preds = [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(50)]
    refs = [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(50)]
    expected = [naive_rouge_l(p, r) for p, r in zip(preds, refs)]
    assert rouge_l_each(preds, refs) == pytest.approx(expected)
    assert rouge_l(preds, refs) == pytest.approx(sum(expected) / len(expected))


def test_known_values():
    assert rouge_l(["The cat sat."], ["the cat sat"]) == pytest.approx(1.0)
    # LCS 3 of 3 predicted and 6 reference tokens: P=1, R=0.5, F1=2/3
    assert rouge_l(["the cat sat"], ["the cat sat on the mat"]) == pytest.approx(2 / 3)
    assert rouge_l(["dog"], ["cat"]) == 0.0


def test_stemmer_is_on():
    assert rouge_l(["cats running"], ["cat runs"]) == pytest.approx(1.0)


def test_empty_prediction_scores_zero():
    assert rouge_l_each(["", "   ", "the cat"], ["the cat", "the cat", "the cat"]) == [0.0, 0.0, 1.0]


def test_length_mismatch_and_no_pairs_raise():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_l(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no predictions"):
        rouge_l([], [])
