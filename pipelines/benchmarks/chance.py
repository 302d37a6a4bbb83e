"""Accuracy read against chance, and differences with paired intervals.

A model that answers one value everywhere is right on exactly the items whose gold is that value: its accuracy is
the share of that value among the golds, and it knows nothing. The chance level of a set of answers is the
accuracy the same answers would have if the golds were shuffled among the items: with a_v answers and g_v golds
of value v among n items, E[matches] = Σ_v a_v g_v / n, so

    chance = Σ_v a_v g_v / n²          adjusted = accuracy − chance        (both in [0, 1] here, points in reports)

A constant predictor scores adjusted 0 whatever the golds; a perfect one scores 1 − Σ_v (g_v / n)². Models are
compared by their adjusted accuracies on the items both answered, with a paired bootstrap (the same resampled
items for both, chance recomputed on each resample), seeded, so every figure is reproducible.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

NO_ANSWER = "∅"  # what an output without an extractable answer counts as (it matches no gold)
DEGENERATE_SHARE = 0.25  # one value in more than this share of the answers is flagged
BOOTSTRAP_REPLICATES = 2000


def chance_level(answers: Sequence[str | None], golds: Sequence[str]) -> float:
    """Σ_v a_v g_v / n²: the expected accuracy of these answers with the golds shuffled among the items."""
    if len(answers) != len(golds) or not golds:
        raise ValueError(f"{len(answers)} answers for {len(golds)} golds")
    counts = Counter(NO_ANSWER if a is None else a for a in answers)
    return sum(counts[v] * g for v, g in Counter(golds).items()) / len(golds) ** 2


def answer_summary(answers: Sequence[str | None], golds: Sequence[str], correct: Sequence[bool]) -> dict:
    """{chance, adjusted, top_answer, top_share, degenerate} of one unit (values as fractions)."""
    keys = [NO_ANSWER if a is None else a for a in answers]
    top, count = Counter(keys).most_common(1)[0]
    accuracy, chance = sum(map(bool, correct)) / len(correct), chance_level(keys, golds)
    return {"chance": chance, "adjusted": accuracy - chance, "top_answer": top, "top_share": count / len(keys),
            "degenerate": count / len(keys) > DEGENERATE_SHARE}


def _codes(*columns: Sequence[str]) -> list[np.ndarray]:
    vocabulary: dict[str, int] = {}
    return [np.array([vocabulary.setdefault(v, len(vocabulary)) for v in column]) for column in columns]


def _adjusted(answers: np.ndarray, golds: np.ndarray, correct: np.ndarray, vocabulary: int) -> np.ndarray:
    """Adjusted accuracy of each row of (resampled) items: rows × items arrays in, one value a row out."""
    n = answers.shape[1]
    values = np.arange(vocabulary)
    a = (answers[..., None] == values).sum(axis=1)  # rows × values: how often each value is answered
    g = (golds[..., None] == values).sum(axis=1)
    return correct.mean(axis=1) - (a * g).sum(axis=1) / n**2


def paired_difference(units: Sequence[tuple[dict, dict]], seed: int = 0,
                      replicates: int = BOOTSTRAP_REPLICATES) -> dict | None:
    """Mean over the given languages of adjusted(model) − adjusted(reference), in points, with a 95 % paired
    bootstrap interval. `units`: per language, the two units' `items` (id, answer, gold, correct) — only the items
    both answered count. None when no language has items in common."""
    rng = np.random.default_rng(seed)
    observed, replicated = [], []
    for model, reference in units:
        shared = sorted(set(model["id"]) & set(reference["id"]))
        if not shared:
            continue
        m_at = {i: k for k, i in enumerate(model["id"])}
        r_at = {i: k for k, i in enumerate(reference["id"])}
        m_rows, r_rows = [m_at[i] for i in shared], [r_at[i] for i in shared]
        golds = [reference["gold"][k] for k in r_rows]
        m_answers = [NO_ANSWER if model["answer"][k] is None else model["answer"][k] for k in m_rows]
        r_answers = [NO_ANSWER if reference["answer"][k] is None else reference["answer"][k] for k in r_rows]
        m_codes, r_codes, g_codes = _codes(m_answers, r_answers, golds)
        vocabulary = int(max(m_codes.max(), r_codes.max(), g_codes.max())) + 1
        m_right = np.array([bool(model["correct"][k]) for k in m_rows], dtype=float)
        r_right = np.array([bool(reference["correct"][k]) for k in r_rows], dtype=float)
        every = np.arange(len(shared))[None, :]
        draw = rng.integers(0, len(shared), size=(replicates, len(shared)))  # the same items for both models
        for rows, out in ((every, observed), (draw, replicated)):
            out.append(_adjusted(m_codes[rows], g_codes[rows], m_right[rows], vocabulary)
                       - _adjusted(r_codes[rows], g_codes[rows], r_right[rows], vocabulary))
    if not observed:
        return None
    mean = float(np.mean([o[0] for o in observed]))
    spread = np.mean(np.stack(replicated), axis=0)
    low, high = np.percentile(spread, [2.5, 97.5])
    return {"delta": round(100 * mean, 2), "ci_low": round(100 * float(low), 2), "ci_high": round(100 * float(high), 2)}
