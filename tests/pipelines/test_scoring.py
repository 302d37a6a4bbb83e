"""Scoring rules pinned on a table of tricky outputs, and the per-language statistics."""

from __future__ import annotations

import math

import pytest

from linguaforge.pipelines.benchmarks.scoring import (
    extract_flexible,
    extract_mindmerger,
    extract_strict,
    macro_average,
    parse_gold_number,
    score_classification,
    score_math,
    summarise,
    wilson_interval,
)

# output, gold, mindmerger correct, flexible correct, strict correct
MATH_TABLE = [
    ("She makes 9 * 2 = $18 every day. The answer is 18.", "18", True, True, True),
    ("The profit is 70,000 dollars. The answer is 70,000", "70000", True, True, True),
    ("1,234,567 people. The answer is 1,234,567.", "1234567", True, True, True),
    ("Half of 11 is 5.5. The answer is 5.5.", "5.5", True, True, True),
    ("The answer is 5.50", "5.5", True, True, True),  # numeric equality, not string equality
    ("It drops 7 degrees: 4 - 7 = -3. The answer is -3.", "-3", True, True, True),
    # MindMerger drops signs: "-3" reads as 3, so it also accepts a wrong positive answer
    ("4 - 7 = 3. The answer is 3.", "-3", True, False, False),
    # several numbers: the last one counts for the last-number rules, the phrase for strict
    ("The answer is 12. Then 12 + 5 = 17 apples in another case.", "12", False, False, True),
    ("First 3 + 4 = 7, then 7 * 2 = 14. The answer is 14", "14", True, True, True),
    # no number: MindMerger reads 0.0 (right when the gold is 0), the fixed rules call it wrong
    ("I do not know.", "0", True, False, False),
    ("I do not know.", "5", False, False, False),
    # trailing text after the answer
    ("The answer is 42 apples, and that is final.", "42", True, True, True),
    ("The answer is: $1,000.", "1000", True, True, True),
    ("The answer is **42**.", "42", True, True, True),
    # no answer phrase: strict is wrong even when the last number is right
    ("So she has 8 apples left.", "8", True, True, False),
    # a hyphen inside a word or range is not a sign
    ("COVID-19 cases rose to 20", "20", True, True, False),
    ("Pages 3-5 were read", "5", True, True, False),
    # a comma that is not a thousands separator (European decimal): MindMerger glues digits, we split
    ("Es sind 7,5 Meter.", "75", True, False, False),
    ("Es sind 7,5 Meter.", "5", False, True, False),
    # native digits and a localized phrase
    ("উত্তর হল ১৮", "18", True, True, False),
    ("答案是-5。", "-5", True, True, False),
]


@pytest.mark.parametrize(("output", "gold", "mindmerger", "flexible", "strict"), MATH_TABLE)
def test_math_rules_on_tricky_outputs(output, gold, mindmerger, flexible, strict):
    scored = score_math(output, gold)
    assert (scored["mindmerger"][1], scored["flexible"][1], scored["strict"][1]) == (mindmerger, flexible, strict)


def test_extracted_values():
    assert extract_mindmerger("It is -3.") == 3.0
    assert extract_mindmerger("none") == 0.0
    assert extract_flexible("none") is None
    assert extract_flexible("x = -3.25 or 1,000") == 1000.0
    assert extract_flexible("x = -3.25") == -3.25
    assert extract_flexible("−4 degrees") == -4.0  # Unicode minus
    assert extract_strict("The answer is -3. The answer is 7.") == -3.0  # the first phrase counts
    assert extract_strict("the ANSWER is 9") == 9.0
    assert extract_strict("The answer is unknown, maybe 4") is None
    assert extract_strict("Die Antwort lautet 11.", ["The answer is", "Die Antwort lautet"]) == 11.0
    assert score_math("The answer is -3.", "-3")["strict"] == ("-3", True)
    assert score_math("nothing", "4")["flexible"] == (None, False)


def test_localized_answer_phrase_in_strict_rule():
    assert score_math("Die Antwort lautet 11.", "11", ["The answer is", "Die Antwort lautet"])["strict"][1]
    assert not score_math("Die Antwort lautet 11.", "11")["strict"][1]


def test_gold_numbers():
    assert parse_gold_number("2,125") == 2125.0
    assert parse_gold_number(" -3.5 ") == -3.5
    for bad in ("", "twelve", "3/4", "1.2.3"):
        with pytest.raises(ValueError):
            parse_gold_number(bad)


# output, gold, options, exact correct, lenient correct
CLASSIFICATION_TABLE = [
    ("B", "B", "ABCDE", True, True),
    (" B\n", "B", "ABCDE", True, True),
    ("B.", "B", "ABCDE", False, True),
    ("(B)", "B", "ABCDE", False, True),
    ("B. bookstore", "B", "ABCDE", False, True),
    ("**C**", "C", "ABCDE", False, True),
    ("b", "B", "ABCDE", False, False),  # letters are case-sensitive: "a" is also an English word
    ("a dog", "A", "ABCDE", False, False),
    ("F", "B", "ABCDE", False, False),
    ("", "B", "ABCDE", False, False),
    ("entailment", "entailment", ("entailment", "neutral", "contradiction"), True, True),
    ("Entailment.", "entailment", ("entailment", "neutral", "contradiction"), False, True),
    ("neutral, because", "neutral", ("entailment", "neutral", "contradiction"), False, True),
    ("contradict", "contradiction", ("entailment", "neutral", "contradiction"), False, False),
]


@pytest.mark.parametrize(("output", "gold", "options", "exact", "lenient"), CLASSIFICATION_TABLE)
def test_classification_rules(output, gold, options, exact, lenient):
    scored = score_classification(output, gold, tuple(options))
    assert (scored["exact"][1], scored["lenient"][1]) == (exact, lenient)


def test_wilson_interval_by_hand():
    # n=10, k=5, z=1.96: centre 0.5, half = 1.96*sqrt(0.025 + 0.009604)/1.38416 = 0.26343
    low, high = wilson_interval(5, 10, z=1.96)
    assert low == pytest.approx(0.5 - 0.26343, abs=1e-4) and high == pytest.approx(0.5 + 0.26343, abs=1e-4)
    # k=0: the lower bound is 0 and the upper bound z^2/(n+z^2) = 3.8416/13.8416
    low, high = wilson_interval(0, 10, z=1.96)
    assert low == 0.0 and high == pytest.approx(3.8416 / 13.8416, abs=1e-9)
    low, high = wilson_interval(10, 10, z=1.96)
    assert high == 1.0 and low == pytest.approx(10 / 13.8416, abs=1e-9)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_summary_and_macro_average():
    s = summarise([True, False, True, True])
    assert (s["n"], s["correct"], s["accuracy"]) == (4, 3, 0.75)
    assert s["ci_low"] < 0.75 < s["ci_high"]
    # each language weighs the same: 100 items at 50 % and 10 items at 100 % average to 75 %
    assert macro_average([0.5, 1.0]) == 0.75
    assert math.isclose(macro_average([0.2, 0.4, 0.9]), 0.5)
    with pytest.raises(ValueError):
        macro_average([])
