"""The comparison report: base vs every other model per language, macro averages, Markdown and PNG."""

from __future__ import annotations

import json

import pytest

from linguaforge.pipelines.benchmarks.chance import answer_summary
from linguaforge.pipelines.benchmarks.report import (
    build_comparison,
    build_report,
    comparison_rows,
    headline_rows,
    read_scores,
)
from linguaforge.pipelines.benchmarks.scoring import wilson_interval
from linguaforge.pipelines.errors import InputError


def _score(model, base, bench, lang, correct, n, rule="mindmerger"):
    """A unit whose golds are n distinct values; the first `correct` items are answered right, the others "x"
    (no gold): chance = correct / n² (each right answer's value is one gold among n), by hand."""
    low, high = wilson_interval(correct, n)
    items = {"id": [f"{lang}-{i}" for i in range(n)], "gold": [f"g{i}" for i in range(n)],
             "answer": [f"g{i}" if i < correct else "x" for i in range(n)], "correct": [i < correct for i in range(n)]}
    return {"model": model, "base": base, "benchmark": bench, "language": lang, "accuracy": correct / n,
            "correct": correct, "n": n, "ci_low": low, "ci_high": high, "primary_rule": rule,
            **answer_summary(items["answer"], items["gold"], items["correct"]), "items": items}


def _adj(correct: int, n: int) -> float:
    """Adjusted accuracy of a `_score` unit, in points: accuracy − chance = k/n − k/n²."""
    return 100 * (correct / n - correct / n**2)


SCORES = [
    _score("llama", None, "mgsm", "de", 10, 40), _score("llama", None, "mgsm", "bn", 4, 40),
    _score("maet", "llama", "mgsm", "de", 14, 40), _score("maet", "llama", "mgsm", "bn", 10, 40),
    _score("mindmerger", "llama", "mgsm", "de", 20, 40), _score("mindmerger", "llama", "mgsm", "bn", 16, 40),
    _score("llama", None, "xnli", "en", 30, 60, "exact"), _score("maet", "llama", "xnli", "en", 33, 60, "exact"),
    _score("llama", None, "xnli", "sw", 20, 60, "exact"),  # maet was not scored on xnli/sw
]


def test_rows_by_hand():
    rows = comparison_rows(SCORES)
    keys = ["benchmark", "metric", "language", "n", "llama", "adj llama", "chance llama", "maet", "adj maet",
            "chance maet", "maet - llama", "mindmerger", "adj mindmerger", "chance mindmerger", "mindmerger - llama"]
    assert all(list(r) == keys for r in rows)  # the same keys in every row (a Prefect table artifact)
    by = {(r["benchmark"], r["language"]): r for r in rows}
    # reporting order: bn before de (the paper's order for MGSM)
    assert [r["language"] for r in rows if r["benchmark"] == "mgsm"] == ["bn", "de", "average"]
    de = by[("mgsm", "de")]
    assert (de["n"], de["llama"], de["maet"], de["mindmerger"]) == (40, 25.0, 35.0, 50.0)
    assert de["chance llama"] == round(100 * 10 / 1600, 2) and de["adj llama"] == round(_adj(10, 40), 2)
    assert de["maet - llama"] == round(_adj(14, 40) - _adj(10, 40), 2)  # Δ of the adjusted accuracies: 9.75
    assert de["mindmerger - llama"] == round(_adj(20, 40) - _adj(10, 40), 2)
    avg = by[("mgsm", "average")]  # macro: (25 + 10) / 2, (35 + 25) / 2, (50 + 40) / 2
    assert (avg["llama"], avg["maet"], avg["mindmerger"]) == (17.5, 30.0, 45.0)
    assert avg["maet - llama"] == round((_adj(14, 40) + _adj(10, 40)) / 2 - (_adj(10, 40) + _adj(4, 40)) / 2, 2)
    assert by[("xnli", "sw")]["maet"] is None and by[("xnli", "sw")]["maet - llama"] is None
    assert by[("xnli", "average")]["llama"] == 50.0  # only en: the language every model has
    assert by[("xnli", "en")]["mindmerger"] is None and by[("xnli", "average")]["mindmerger"] is None


def test_markdown_and_plot(tmp_path):
    rows = build_comparison(SCORES, tmp_path, title="demo run")
    assert rows == comparison_rows(SCORES)
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# demo run")
    assert "| language | n | llama | maet (Δ vs llama) | mindmerger (Δ vs llama) |" in md
    assert ("| de | 40 | 25.0 [14.2–40.2] · adj +24.4 ⚠ 75 % “x” | 35.0 [22.1–50.5] · adj +34.1 (+9.8) ⚠ 65 % “x” "
            "| 50.0 [35.2–64.8] · adj +48.8 (+24.4) ⚠ 50 % “x” |")  # 50 − 20/16, and that − 24.375 in md
    assert "| **average** |  | **17.5** · adj **+17.1** |" in md
    assert "Not every model was scored on sw" in md
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comparison.png", "report.md"]


def test_report_from_score_files(tmp_path):
    for i, s in enumerate(SCORES):
        unit = tmp_path / "run" / f"unit{i}"
        unit.mkdir(parents=True)
        (unit / "scores.json").write_text(json.dumps(s))
    assert len(read_scores(tmp_path / "run")) == len(SCORES)
    assert build_report([tmp_path / "run"], tmp_path / "report") == comparison_rows(SCORES)


def test_bad_scores(tmp_path):
    with pytest.raises(InputError, match=r"scores\[0\]: field 'model' is missing"):
        comparison_rows([{**SCORES[0], "model": None}])
    with pytest.raises(InputError, match="llama on mgsm/de is scored twice"):
        comparison_rows([SCORES[0], SCORES[0]])
    with pytest.raises(InputError, match="maet has base 'other' here but 'llama' elsewhere"):
        comparison_rows([SCORES[2], {**SCORES[3], "base": "other"}])
    with pytest.raises(InputError, match="no scores.json found"):
        read_scores(tmp_path)
    (tmp_path / "scores.json").write_text("{")
    with pytest.raises(InputError, match=r"scores\.json: not valid JSON"):
        read_scores(tmp_path)
    with pytest.raises(InputError, match="no scores to compare"):
        comparison_rows([])


def test_the_share_of_math_outputs_holding_a_number_is_reported(tmp_path):
    scores = [s | {"with_number": 0.95 if s["model"] == "llama" else 1.0} for s in SCORES if s["benchmark"] == "mgsm"]
    build_comparison(scores, tmp_path, title="t")
    text = (tmp_path / "report.md").read_text()
    assert "Outputs holding a number, % (mgsm):" in text
    assert "| llama | 95 | 95 |" in text and "| maet | 100 | 100 |" in text
    build_comparison(SCORES, tmp_path / "none", title="t")
    assert "Outputs holding a number" not in (tmp_path / "none" / "report.md").read_text()  # none recorded


def test_model_whose_base_was_not_evaluated_has_no_delta():
    rows = comparison_rows([_score("maet", "llama", "mgsm", "de", 14, 40)])
    assert list(rows[0]) == ["benchmark", "metric", "language", "n", "maet", "adj maet", "chance maet"]


def test_stacked_models_appear_with_both_deltas_and_the_headline_by_hand(tmp_path):
    scores = [_score("base", None, "mgsm", "en", 10, 100), _score("base", None, "mgsm", "de", 5, 100),
              _score("base", None, "mgsm", "sw", 5, 100),
              _score("maet", "base", "mgsm", "en", 60, 100), _score("maet", "base", "mgsm", "de", 25, 100),
              _score("maet", "base", "mgsm", "sw", 15, 100),
              _score("mm-maet", "maet", "mgsm", "en", 60, 100), _score("mm-maet", "maet", "mgsm", "de", 45, 80),
              _score("mm-maet", "maet", "mgsm", "sw", 35, 100)]
    rows = build_comparison(scores, tmp_path, title="t", pivot="en")
    de = next(r for r in rows if r["language"] == "de")
    assert de["mm-maet - maet"] == round(_adj(45, 80) - _adj(25, 100), 2)
    assert de["mm-maet - base"] == round(_adj(45, 80) - _adj(5, 100), 2)
    assert de["n mm-maet"] == 80 and de["n base"] == 100  # n per model: the counts differ
    headline = {(r["model"], r["vs"]): r["mgsm"] for r in headline_rows(scores, "en")}
    assert set(headline) == {("maet", "base"), ("mm-maet", "base"), ("mm-maet", "maet")}
    h = headline[("maet", "base")]  # mean of the adjusted differences over de, sw (all 100 items in common)
    assert h["delta"] == round(((_adj(25, 100) - _adj(5, 100)) + (_adj(15, 100) - _adj(5, 100))) / 2, 2)
    assert sorted(h["languages"]) == ["de", "sw"] and h["ci_low"] < h["delta"] < h["ci_high"]
    assert headline_rows(scores, "en") == headline_rows(scores, "en")  # seeded: the same interval every time
    paired = headline[("mm-maet", "maet")]  # de: only the 80 items both answered count
    md = (tmp_path / "report.md").read_text()
    assert md.index("## Headline") < md.index("## mgsm")
    assert f"| mm-maet | maet | {paired['delta']:+.1f} [" in md
    assert "n=80" in md


def test_not_scored_is_not_zero(tmp_path):
    scores = [_score("base", None, "mgsm", "de", 0, 10), _score("base", None, "mgsm", "sw", 3, 10),
              _score("maet", "base", "mgsm", "de", 0, 10)]
    build_comparison(scores, tmp_path, title="t")
    md = (tmp_path / "report.md").read_text()
    assert "| de | 10 | 0.0 [" in md and "| sw | 10 | 30.0 [0.0–0.0]" not in md
    assert "| sw | 10 | 30.0" in md and "*not scored*" in md.split("| sw |")[1].splitlines()[0]


def test_the_latest_score_of_a_unit_wins():
    from linguaforge.pipelines.benchmarks.report import latest_scores

    old = {"model": "m", "benchmark": "mgsm", "language": "de", "accuracy": 0.1}
    other = {"model": "m", "benchmark": "mgsm", "language": "sw", "accuracy": 0.2}
    new = {**old, "accuracy": 0.3}
    assert latest_scores(iter([old, other, new])) == [new, other]
    assert latest_scores([new, other, old]) == [old, other]  # the order given decides, nothing else
