"""Scores in lm-eval's results layout: the keys lm-eval 0.4 writes, and numbers computed by hand."""

import math

import pytest

from linguaforge.pipelines.benchmarks.lmeval_format import lmeval_results, mean_stderr, sanitize_model_name

LM_EVAL_KEYS = {"results", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples",
                "config"}


def unit(benchmark: str, language: str, correct: int, n: int, scoring: str = "generate") -> dict:
    rules = {"mindmerger": correct, "strict": max(0, correct - 1)}
    return {"benchmark": benchmark, "language": language, "n": n, "scoring": scoring, "preset": "mindmerger",
            "primary_rule": "mindmerger", "stop": ["\n\n"], "max_new_tokens": 64, "data_source": "demo:bench/mgsm",
            "exemplars": None, "shots": 0, "items_total": n + 2,
            "rules": {r: {"n": n, "correct": k, "accuracy": k / n} for r, k in rules.items()},
            "accuracy": correct / n}


def test_stderr_is_lm_evals_sample_standard_error():
    assert mean_stderr(0.5, 5) == pytest.approx(0.25)  # sqrt(0.5 * 0.5 / 4)
    assert mean_stderr(1.0, 10) == 0.0
    assert math.isnan(mean_stderr(1.0, 1))


def test_the_document_has_lm_evals_keys_and_our_numbers():
    doc = lmeval_results([unit("mgsm", "sw", 2, 5), unit("mgsm", "de", 4, 5), unit("xnli", "de", 1, 4, "loglik")],
                         "runs/maet model")
    assert LM_EVAL_KEYS <= doc.keys()
    assert list(doc["results"]) == ["mgsm_de", "mgsm_sw", "xnli_de"]
    assert doc["results"]["mgsm_sw"]["acc,mindmerger"] == pytest.approx(0.4)
    assert doc["results"]["mgsm_sw"]["acc_stderr,mindmerger"] == pytest.approx(math.sqrt(0.4 * 0.6 / 4))
    assert doc["results"]["mgsm_sw"]["acc,strict"] == pytest.approx(0.2)
    assert doc["group_subtasks"] == {"mgsm": ["mgsm_de", "mgsm_sw"], "xnli": ["xnli_de"]}
    assert doc["n-samples"]["mgsm_de"] == {"original": 7, "effective": 5}
    assert doc["configs"]["mgsm_de"]["output_type"] == "generate_until"
    assert doc["configs"]["xnli_de"]["output_type"] == "multiple_choice"
    assert doc["configs"]["mgsm_de"]["generation_kwargs"]["max_gen_toks"] == 64
    assert doc["higher_is_better"]["xnli_de"] == {"acc": True}
    assert doc["config"]["model_args"] == "pretrained=runs/maet model"
    assert doc["model_name_sanitized"] == sanitize_model_name("runs/maet model") == "runs__maet model"


def test_no_units_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        lmeval_results([], "m")
