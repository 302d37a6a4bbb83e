"""Evaluation units end to end: a tiny model over every benchmark's fixture files, and scripted model
sides (any object with `generate` / `option_logprobs`, as a MindMerger model is) whose answers we choose,
so the written records and scores can be checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from linguaforge.pipelines.benchmarks.settings import BenchmarkSpec
from linguaforge.pipelines.benchmarks.units import ModelLoading, score_model, score_unit
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.generation.causal_lm import HFCausalLMGenerator
from linguaforge.pipelines.reproducible import content_only
from tests.pipelines.benchmark_model import tiny_lm_dir  # noqa: F401  (fixture)

F = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"
UNITS = [("mgsm", "mgsm", "de"), ("msvamp", "msvamp", "de"), ("xcsqa", "xcsqa", "zh"), ("xnli", "xnli", "en"),
         ("mmlu_science", "mmlu", "de")]


def spec(name: str, folder: str, **settings) -> BenchmarkSpec:
    return BenchmarkSpec(name=name, data=str(F / folder), **settings)


class Scripted:
    """A model side that answers from a table keyed by item id (and records what it was asked)."""

    batch_size = 2

    def __init__(self, answers: dict[str, str] | None = None, logprobs: dict[str, list[float]] | None = None,
                 fail_after: int | None = None):
        self.answers, self.logprobs, self.fail_after, self.seen = answers or {}, logprobs or {}, fail_after, []

    def generate(self, items, max_new_tokens, stop):
        if self.fail_after is not None and len(self.seen) + len(items) > self.fail_after:
            raise RuntimeError("device lost")
        self.seen += list(items)
        self.last_call = (max_new_tokens, list(stop))
        return [self.answers.get(it.id, "") for it in items]

    def option_logprobs(self, items):
        self.seen += list(items)
        return [self.logprobs[it.id] for it in items]


@pytest.fixture(scope="module")
def tiny(tiny_lm_dir):  # noqa: F811
    return HFCausalLMGenerator.from_pretrained(str(tiny_lm_dir), batch_size=4)


@pytest.mark.parametrize(("bench", "folder", "lang"), UNITS)
def test_tiny_model_end_to_end(tiny, tmp_path, bench, folder, lang):
    scores = score_unit(tiny, spec(bench, folder, max_new_tokens=8), lang, tmp_path, model_name="tiny")
    table = pq.read_table(tmp_path / "records.parquet").to_pylist()
    assert json.loads((tmp_path / "scores.json").read_text()) == content_only(scores)  # timing stays out of the file
    assert scores["seconds"] > 0
    assert scores["n"] == len(table) > 0 and scores["benchmark"] == bench and scores["language"] == lang
    assert scores["correct"] == sum(r["correct"] for r in table)
    for rule, summary in scores["rules"].items():
        assert summary["correct"] == sum(r[f"correct_{rule}"] for r in table)
    assert {"id", "prompt", "source_text", "output", "extracted", "gold", "correct"} <= set(table[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records.parquet", "results_lmeval.json", "scores.json"]  # no temp files


def test_math_records_and_scores_by_hand(tmp_path):
    answers = {"0": "She sells 9 eggs for $2 each: 9 * 2 = 18. The answer is 18.",  # right by every rule
               "1": "Es sind 3 Ballen.",  # right, but no answer phrase: strict says wrong
               "2": "Die Antwort lautet 2,126."}  # localized phrase, thousands separator
    model = Scripted(answers)
    progress = []
    scores = score_unit(model, spec("mgsm", "mgsm"), "de", tmp_path, progress=lambda *a: progress.append(a),
                        model_name="scripted", base_name="base")
    assert {r: s["correct"] for r, s in scores["rules"].items()} == {"mindmerger": 3, "flexible": 3, "strict": 1}
    assert scores["primary_rule"] == "mindmerger" and scores["accuracy"] == 1.0 and scores["n"] == 3
    assert scores["base"] == "base" and scores["max_new_tokens"] == 512
    assert model.last_call == (512, ["\n\n### Instruction"])
    records = pq.read_table(tmp_path / "records.parquet").to_pylist()
    assert [r["extracted_strict"] for r in records] == ["18", None, None]
    assert [r["gold"] for r in records] == ["18", "3", "2126"]
    assert records[0]["source_text"].startswith("Janets Enten") and "### Instruction" in records[0]["prompt"]
    assert progress[-1][:2] == (3, 3) and progress[-1][2]["accuracy"] == 1.0
    assert [p[0] for p in progress] == [3]  # one chunk of 4 x batch_size=2 items
    assert scores["with_number"] == 1.0  # every output holds a number
    wordy = score_unit(Scripted({"0": "Sie verkauft Eier.", "1": "Es sind 3 Ballen.", "2": "Keine Ahnung."}),
                       spec("mgsm", "mgsm"), "de", tmp_path / "wordy")
    assert wordy["with_number"] == 1 / 3


def test_native_cot_counts_the_localized_phrase(tmp_path):
    model = Scripted({"2": "1 + 2.125 = 2.126. Die Antwort lautet 2126."})
    scores = score_unit(model, spec("mgsm", "mgsm", prompt="native_cot", max_new_tokens=64,
                                    exemplars=str(F / "exemplars" / "native_cot_math.json")), "de", tmp_path)
    assert scores["rules"]["strict"]["correct"] == 1 and model.last_call == (64, ["\n\n", "Frage:"])
    assert model.seen[0].prompt.startswith("Frage: Roger hat 5 Tennisbälle.")


def test_classification_exact_and_lenient(tmp_path):
    model = Scripted({"1afa02df02c908a558b4036e80242fac": "A", "a7ab086045575bb497933726e4e6ad28": "B. bookstore",
                      "b8c0a4703079cf661d7261a60a1bcbff": "C"})
    scores = score_unit(model, spec("xcsqa", "xcsqa", limit=3), "en", tmp_path)
    assert scores["rules"]["exact"]["correct"] == 1 and scores["rules"]["lenient"]["correct"] == 2
    assert scores["max_new_tokens"] == 16 and model.last_call[1] == ["\n"]
    records = pq.read_table(tmp_path / "records.parquet").to_pylist()
    assert records[1]["extracted_lenient"] == "B" and records[1]["options"] == list("ABCDE")


def test_loglik_scoring_picks_the_most_likely_option(tmp_path):
    model = Scripted(logprobs={"1n": [-3.0, -1.0, -2.0], "2n": [-0.5, -4.0, -4.0], "3n": [-1.0, -2.0, -3.0]})
    scores = score_unit(model, spec("xnli", "xnli", scoring="loglik"), "en", tmp_path)
    records = pq.read_table(tmp_path / "records.parquet").to_pylist()
    assert [r["output"] for r in records] == ["neutral", "entailment", "entailment"]
    assert [r["correct"] for r in records] == [True, True, False]  # golds: neutral, entailment, contradiction
    assert scores["primary_rule"] == "loglik" and scores["correct"] == 2 and scores["max_new_tokens"] is None
    assert records[0]["option_logprobs"] == [-3.0, -1.0, -2.0]


def test_loglik_with_the_tiny_model(tiny, tmp_path):
    scores = score_unit(tiny, spec("xcsqa", "xcsqa", scoring="loglik"), "zh", tmp_path)
    records = pq.read_table(tmp_path / "records.parquet").to_pylist()
    for r in records:
        best = max(range(5), key=lambda i: r["option_logprobs"][i])
        assert r["output"] == "ABCDE"[best] and r["correct"] == (r["output"] == r["gold"])
    assert scores["n"] == 2


def test_refusals_leave_nothing_behind(tmp_path):
    with pytest.raises(InputError, match="free-form math"):
        score_unit(Scripted(), spec("mgsm", "mgsm", scoring="loglik"), "de", tmp_path / "a")

    class GenerateOnly:
        def generate(self, items, max_new_tokens, stop):
            return [""] * len(items)

    with pytest.raises(InputError, match="GenerateOnly has no option_logprobs"):
        score_unit(GenerateOnly(), spec("xnli", "xnli", scoring="loglik"), "de", tmp_path / "b")
    with pytest.raises(InputError, match="language 'sw' is not in the file"):
        score_unit(Scripted(), spec("xnli", "xnli"), "sw", tmp_path / "c")
    with pytest.raises(RuntimeError, match="device lost"):
        score_unit(Scripted(fail_after=2), spec("mgsm", "mgsm", limit=3), "de", tmp_path / "d")
    assert not any((tmp_path / d).exists() and any((tmp_path / d).iterdir()) for d in "abcd")


def test_score_model_cli_function(tiny_lm_dir, tmp_path):  # noqa: F811
    seen = []
    scores = score_model(str(tiny_lm_dir), spec("mgsm", "mgsm", max_new_tokens=6), tmp_path, ModelLoading(batch_size=4),
                         progress=lambda d, t, m: seen.append((d, t, m["language"])))
    assert [s["language"] for s in scores] == ["de", "en"] and all(s["model"] == "model" for s in scores)
    assert (tmp_path / "mgsm" / "de" / "scores.json").exists() and (tmp_path / "mgsm" / "en" / "records.parquet").exists()
    assert "## mgsm (rule: mindmerger)" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert seen[-1] == (6, 6, "en")
