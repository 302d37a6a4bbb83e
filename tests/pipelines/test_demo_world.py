"""The demo world: deterministic bytes, every official file shape, and gold answers that are right."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from pipelines.demo_world import MMLU_SCIENCE_SUBJECTS, WorldSpec, generate_world, make_language

LANGS = ["en", "de", "zh", "sw", "bn"]


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _small(seed: int) -> WorldSpec:
    return WorldSpec(languages=LANGS, seed=seed, general_docs=40, ability_problems=30, translation_pairs=20,
                     query_items=10, test_items=9)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    generate_world(_small(0), tmp_path / "a")
    generate_world(_small(0), tmp_path / "b")
    generate_world(_small(1), tmp_path / "c")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_languages_have_their_own_scripts_and_orders():
    bn, zh, de = (make_language(c, 0) for c in ("bn", "zh", "de"))
    assert all("\u0980" <= ch <= "\u09ff" for ch in bn.words["apples"])
    assert all("\u4e00" <= ch <= "\u9fff" for ch in zh.words["apples"])
    assert de.words["apples"].isascii() and de.words["apples"] != "apples"
    roles = [("S", ["Tom"]), ("V", ["has"]), ("O", [3, "apples"])]
    assert make_language("en", 0).render(roles) == "Tom has 3 apples."
    assert bn.render(roles).endswith(bn.words["has"] + "।")  # SOV: the verb comes last
    assert " " not in zh.render(roles)


def test_low_resource_languages_get_less_text(tmp_path):
    counts = generate_world(_small(0), tmp_path)
    assert counts["general_docs"]["sw"] == counts["general_docs"]["bn"] == 10
    assert counts["general_docs"]["de"] == 40


def test_benchmark_files_have_the_official_shapes_and_right_answers(tmp_path):
    generate_world(_small(0), tmp_path)
    bench = tmp_path / "bench"
    for lang in LANGS:
        rows = list(csv.reader(open(bench / "mgsm" / f"mgsm_{lang}.tsv", encoding="utf-8"), delimiter="\t"))
        assert len(rows) == 9 and all(len(r) == 2 for r in rows)
        assert all(r[1].replace(",", "").isdigit() for r in rows)
        xcsqa = [json.loads(line) for line in open(bench / "xcsqa" / lang / "dev.jsonl", encoding="utf-8")]
        assert all(len(r["question"]["choices"]) == 5 and r["answerKey"] in "ABCDE" for r in xcsqa)
        mmlu = json.loads((bench / "mmlu" / f"{lang}_test.json").read_text())
        assert {m["id"].split("/")[0] for m in mmlu} - {"high_school_us_history"} <= set(MMLU_SCIENCE_SUBJECTS)
        assert all(m["answer"] in "ABCD" and m["option_d"] for m in mmlu)
    msvamp = [json.loads(line) for line in open(bench / "msvamp" / "test_Bengali.json", encoding="utf-8")]
    for row in msvamp:  # the gold answer is what the equation evaluates to
        assert eval(row["equation"], {"__builtins__": {}}) == int(row["response"])  # noqa: S307 - our own arithmetic
    header, *rows = list(csv.reader(open(bench / "xnli" / "xnli.test.tsv", encoding="utf-8"), delimiter="\t"))
    assert header[:4] == ["language", "gold_label", "sentence1", "sentence2"]
    assert {r[0] for r in rows} == set(LANGS) and {r[1] for r in rows} == {"entailment", "neutral", "contradiction"}


def test_ability_corpus_solutions_end_in_the_answer(tmp_path):
    generate_world(_small(0), tmp_path)
    for line in open(tmp_path / "ability" / "en.jsonl"):
        text = json.loads(line)["text"]
        assert text.startswith("Question: ") and "\nAnswer: " in text
        assert text.rstrip(".").split("The answer is ")[-1].isdigit()
    de = (tmp_path / "translation" / "de" / "train.de").read_text().splitlines()
    en = (tmp_path / "translation" / "de" / "train.en").read_text().splitlines()
    assert len(de) == len(en) == 20
