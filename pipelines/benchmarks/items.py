"""The benchmark item: what every model side (a plain HF LLM, a MindMerger model) is scored on."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BenchmarkItem:
    """One test item, templated and ready to score.

    `prompt` is what a plain LLM reads (few-shot exemplars included). `source_text` is what a multilingual
    encoder reads: for math the raw question in its language, without template; for classification the
    zero-shot templated text (MindMerger feeds the same text to both sides there). `options` are the
    answers a classifier may give, exactly as scoring matches them ("A".."E", "entailment", ...), and
    `continuations` the strings whose log-likelihood after `prompt` is compared (options with the preset's
    prefix, usually a space). Math items have neither.
    """

    id: str
    benchmark: str
    language: str  # ISO 639-1
    prompt: str
    source_text: str
    gold: str
    options: tuple[str, ...] = ()
    continuations: tuple[str, ...] = ()
    answer_phrases: tuple[str, ...] = ("The answer is",)  # for the strict math rule
    meta: dict = field(default_factory=dict, compare=False, hash=False)
