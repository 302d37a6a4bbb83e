"""Accuracy read against chance (pipelines/benchmarks/chance.py), by hand: the chance level of a set of answers is
what they score with the golds shuffled; a constant predictor scores 0 adjusted whatever the golds, a perfect one
100 − chance; shuffled golds take every model to about 0; paired intervals are seeded and pair the items."""

from __future__ import annotations

import random

import pytest

from linguaforge.pipelines.benchmarks.chance import answer_summary, chance_level, paired_difference


def test_chance_by_hand():
    answers = ["6", "6", "6", "7"]
    golds = ["6", "7", "8", "6"]  # a_6 = 3, a_7 = 1; g_6 = 2, g_7 = 1, g_8 = 1 → (3·2 + 1·1) / 16
    assert chance_level(answers, golds) == pytest.approx(7 / 16)
    permutations = [random.Random(s).sample(golds, 4) for s in range(20000)]  # what "golds shuffled" means
    empirical = sum(sum(a == g for a, g in zip(answers, p, strict=True)) / 4 for p in permutations) / len(permutations)
    assert empirical == pytest.approx(7 / 16, abs=0.01)


@pytest.mark.parametrize("golds", [["6"] * 13 + [str(i) for i in range(87)], [str(i % 9) for i in range(100)]])
def test_a_constant_predictor_scores_zero_and_a_perfect_one_100_minus_chance(golds):
    constant = ["6"] * len(golds)
    right = [a == g for a, g in zip(constant, golds, strict=True)]
    summary = answer_summary(constant, golds, right)
    assert summary["adjusted"] == pytest.approx(0.0)  # its accuracy is exactly the golds' share of "6"
    assert summary["top_answer"] == "6" and summary["top_share"] == 1.0 and summary["degenerate"]
    perfect = answer_summary(golds, golds, [True] * len(golds))
    shares = {g: golds.count(g) / len(golds) for g in set(golds)}
    assert perfect["adjusted"] == pytest.approx(1 - sum(p * p for p in shares.values()))


def test_shuffled_golds_take_a_model_to_about_zero():
    rng = random.Random(0)
    golds = [str(rng.randint(0, 20)) for _ in range(2000)]
    answers = [g if rng.random() < 0.6 else str(rng.randint(0, 20)) for g in golds]  # a model that knows a lot
    right = [a == g for a, g in zip(answers, golds, strict=True)]
    assert answer_summary(answers, golds, right)["adjusted"] > 0.5
    shuffled = rng.sample(golds, len(golds))
    wrong_pairs = [a == g for a, g in zip(answers, shuffled, strict=True)]
    assert abs(answer_summary(answers, shuffled, wrong_pairs)["adjusted"]) < 0.02


def _unit(answers, golds):
    return {"id": [str(i) for i in range(len(golds))], "answer": answers, "gold": golds,
            "correct": [a == g for a, g in zip(answers, golds, strict=True)]}


def test_paired_difference_by_hand_and_seeded():
    golds = [str(i) for i in range(50)]  # distinct golds: chance = k / n²
    base = _unit(["x"] * 50, golds)
    better = _unit(golds[:20] + ["x"] * 30, golds)  # 20 right
    found = paired_difference([(better, base)], seed=1)
    assert found["delta"] == round(100 * (20 / 50 - 20 / 2500), 2)
    assert found["ci_low"] < found["delta"] < found["ci_high"]
    assert paired_difference([(better, base)], seed=1) == found  # seeded
    same = paired_difference([(base, base)], seed=1)
    assert same == {"delta": 0.0, "ci_low": 0.0, "ci_high": 0.0}  # paired: identical answers differ by nothing
    other = {**better, "id": [str(i + 100) for i in range(50)]}
    assert paired_difference([(other, base)]) is None  # no item in common


def test_pairing_narrows_the_interval_of_models_that_answer_alike():
    rng = random.Random(3)
    golds = [str(rng.randint(0, 9)) for _ in range(200)]
    first = [g if rng.random() < 0.5 else "x" for g in golds]
    second = [a if rng.random() < 0.9 else (g if a == "x" else "x") for a, g in zip(first, golds, strict=True)]
    found = paired_difference([(_unit(second, golds), _unit(first, golds))])
    width = found["ci_high"] - found["ci_low"]
    independent = 2 * 1.96 * 100 * (0.5 * 0.5 / 200 * 2) ** 0.5  # two independent proportions near 50 %
    assert width < independent / 2
