"""Scoring rules: extract an answer from a model's output, compare it with the gold answer, summarise.

Math, side by side (see docs/methods-evaluation.md for the table of tricky outputs each rule is pinned on):
- `mindmerger`: the official MindMerger rule, reproduced as is so numbers match the paper: commas between
  digits removed, the last unsigned number `\\d+(\\.\\d+)?` taken as a float; no number counts as 0.0.
  Its known defects stay in it on purpose: "-5" reads as 5, and an output with no number is right when
  the gold answer is 0.
- `flexible` (lm-eval "flexible-extract"): the last number in the output, with its sign, thousands
  separators and decimals; no number is wrong.
- `strict` (lm-eval "strict-match"): the number right after the first "The answer is" (or the
  language's own answer phrase), with its sign; no such phrase or no number after it is wrong.

Classification: `exact` (the stripped output equals the gold label, as MindMerger scores X-CSQA and XNLI)
and `lenient` (the first label-like token of the output, punctuation stripped, equals the gold label;
letters compare case-sensitively, label words case-insensitively).

Accuracy per language comes with a 95 % Wilson score interval; the macro average is the plain mean of
per-language accuracies.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

# Digits are Unicode (\d): models answer in Bengali or full-width digits too, and float() reads them.
# A minus counts as a sign only when not glued to a Latin word or a number ("COVID-19", "3-5" are not -19, -5);
# CJK text runs straight into numbers ("答案是-5"), so only ASCII word characters block it.
_SIGN = r"(?P<sign>(?<![A-Za-z0-9_.])[-\u2212])?"
_NUMBER = re.compile(_SIGN + r"\$?(?<![\d.])(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<frac>\.\d+)?")
_MINDMERGER_NUMBER = re.compile(r"(\d+(\.\d+)?)")
_DIGIT_COMMA_DIGIT = re.compile(r"(\d),(\d)")
_LABEL_TOKEN = re.compile(r"[^\W_]+")

MATH_RULES = ("mindmerger", "flexible", "strict")
CLASSIFICATION_RULES = ("exact", "lenient")


def parse_gold_number(text: str) -> float:
    """A gold answer as a number: "2,125" -> 2125.0, "-3.5" -> -3.5. Raises ValueError if it is not one."""
    cleaned = text.strip().replace(",", "").replace("\u2212", "-")
    if not re.fullmatch(r"[-+]?\d+(\.\d+)?|[-+]?\.\d+", cleaned):
        raise ValueError(f"not a number: {text!r}")
    return float(cleaned)


def _to_float(m: re.Match) -> float:
    value = float(m["int"].replace(",", "") + (m["frac"] or ""))
    return -value if m["sign"] else value


def extract_mindmerger(output: str) -> float:
    """The official MindMerger extraction (its behaviour, defects included)."""
    found = _MINDMERGER_NUMBER.findall(_DIGIT_COMMA_DIGIT.sub(r"\1\2", output))
    return float(found[-1][0]) if found else 0.0


def extract_flexible(output: str) -> float | None:
    """The last number in the output, signed; None when there is none."""
    found = list(_NUMBER.finditer(output))
    return _to_float(found[-1]) if found else None


def extract_strict(output: str, phrases: Sequence[str] = ("The answer is",)) -> float | None:
    """The number right after the first answer phrase ("The answer is -3." -> -3.0); None without one."""
    alternatives = "|".join(re.escape(p.strip()) for p in phrases if p.strip())
    if not alternatives:
        return None
    m = re.search(rf"(?:{alternatives})\s*[:：]?\s*\**\s*(?=\S)", output, flags=re.IGNORECASE)
    if m is None:
        return None
    num = _NUMBER.match(output, m.end())
    return _to_float(num) if num else None


def math_correct(extracted: float | None, gold: str) -> bool:
    return extracted is not None and extracted == parse_gold_number(gold)


def score_math(output: str, gold: str, phrases: Sequence[str] = ("The answer is",)) -> dict[str, tuple[str | None, bool]]:
    """{rule: (extracted answer as text or None, correct)} for every math rule."""
    out = {}
    for rule, value in (("mindmerger", extract_mindmerger(output)), ("flexible", extract_flexible(output)),
                        ("strict", extract_strict(output, phrases))):
        if rule == "mindmerger":  # the official comparison: gold goes through the same extraction
            correct = value == extract_mindmerger(gold)
        else:
            correct = math_correct(value, gold)
        out[rule] = (None if value is None else number_text(value), correct)
    return out


def gold_key(gold: str, rule: str) -> str:
    """The gold answer as the text a rule's extracted answer is compared with (equal texts ⇔ correct), so that
    answers and golds can be counted together (pipelines/benchmarks/chance.py)."""
    if rule == "mindmerger":
        return number_text(extract_mindmerger(gold))
    if rule in ("flexible", "strict"):
        return number_text(parse_gold_number(gold))
    return gold  # classification labels, and log-likelihood choices


def number_text(value: float) -> str:
    """A number as the text a gold or a prediction is compared by: integers without ".0" (up to 1e18, past
    which a float holds no exact integer), anything else as Python writes it."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e18 else repr(value)


def first_label_token(output: str) -> str | None:
    """The first letter/digit run of the output ("(B) tree" -> "B", " Entailment." -> "Entailment")."""
    m = _LABEL_TOKEN.search(output)
    return m.group(0) if m else None


def score_classification(output: str, gold: str, options: Sequence[str]) -> dict[str, tuple[str | None, bool]]:
    """{rule: (extracted answer or None, correct)} for `exact` and `lenient`."""
    stripped = output.strip()
    token = first_label_token(output)
    lenient = None
    if token is not None:
        for option in options:
            same = token == option if len(option) == 1 else token.lower() == option.lower()
            if same:
                lenient = option
                break
    return {"exact": (stripped, stripped == gold), "lenient": (lenient, lenient == gold)}


def wilson_interval(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial proportion (sensible at 0 %, 100 % and small n)."""
    if n <= 0:
        raise ValueError("a confidence interval needs at least one item")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(correct: Sequence[bool]) -> dict:
    """{n, correct, accuracy, ci_low, ci_high} of one rule over one language's items."""
    n, k = len(correct), sum(bool(c) for c in correct)
    low, high = wilson_interval(k, n)
    return {"n": n, "correct": k, "accuracy": k / n, "ci_low": low, "ci_high": high}


def macro_average(accuracies: Sequence[float]) -> float:
    """Mean over languages, each language weighing the same whatever its item count."""
    if not accuracies:
        raise ValueError("a macro average needs at least one language")
    return sum(accuracies) / len(accuracies)
