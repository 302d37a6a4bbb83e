"""The demo world: deterministic bytes, every official file shape, and gold answers that are right."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from linguaforge.pipelines.demo.world import (
    MATH_PROMPT,
    MMLU_SCIENCE_SUBJECTS,
    WorldSpec,
    generate_world,
    held_out_problems,
    make_language,
)
from linguaforge.pipelines.languages import language_name

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
        assert text.startswith(MATH_PROMPT.split("{question}")[0]) and "### Response: Let's think step by step. " in text
        assert text.rstrip(".").split("The answer is ")[-1].isdigit()
    de = (tmp_path / "translation" / "de" / "train.de").read_text().splitlines()
    en = (tmp_path / "translation" / "de" / "train.en").read_text().splitlines()
    assert len(de) == len(en) == 20


def _training_texts(world: Path) -> list[str]:
    texts = [json.loads(line)["text"] for path in sorted((world / "general").glob("*.jsonl")) + [
        world / "ability" / "en.jsonl"] for line in open(path, encoding="utf-8")]
    texts += [line for path in sorted((world / "translation").glob("*/train.*"))
              for line in path.read_text(encoding="utf-8").splitlines()]
    texts += [row["query"] + "\n" + row["response"] for path in sorted((world / "queries").glob("*/*.json"))
              for row in json.loads(path.read_text(encoding="utf-8"))]
    return texts


def test_no_test_item_in_any_language_is_in_any_training_corpus(tmp_path):
    spec = WorldSpec(languages=LANGS, seed=0, general_docs=300, ability_problems=3000, translation_pairs=200,
                     query_items=400, test_items=100)
    generate_world(spec, tmp_path)
    training = "\n".join(_training_texts(tmp_path))
    for bench in ("mgsm", "msvamp"):
        for lang in LANGS:
            rows = list(csv.reader(open(tmp_path / "bench" / "mgsm" / f"mgsm_{lang}.tsv", encoding="utf-8"),
                                   delimiter="\t")) if bench == "mgsm" else [
                [json.loads(line)["m_query"]] for line in
                open(tmp_path / "bench" / "msvamp" / f"test_{language_name(lang)}.json", encoding="utf-8")]
            assert len(rows) == 100
            leaked = [r[0] for r in rows if r[0] in training]
            assert not leaked, f"{bench}/{lang}: {len(leaked)} test items occur in training text, e.g. {leaked[0]}"
    # the same problems in every language: equal golds and numbers, item by item
    golds = {lang: [r[1] for r in csv.reader(open(tmp_path / "bench" / "mgsm" / f"mgsm_{lang}.tsv",
                                                  encoding="utf-8"), delimiter="\t")] for lang in LANGS}
    assert all(golds[lang] == golds["en"] for lang in LANGS)
    signatures = [p.signature for b in ("mgsm", "msvamp") for p in held_out_problems(spec, b)]
    assert len(set(signatures)) == len(signatures) == 200  # mgsm and msvamp share no problem either


def test_general_text_has_no_arithmetic_and_every_language_has_the_prompt_shapes(tmp_path):
    generate_world(WorldSpec(languages=LANGS, general_docs=200, ability_problems=10, translation_pairs=10,
                             query_items=10, test_items=4), tmp_path)
    for lang in LANGS:
        docs = [json.loads(line)["text"] for line in open(tmp_path / "general" / f"{lang}.jsonl", encoding="utf-8")]
        assert not any(op in d for d in docs for op in (" + ", " - ", " * ", " = "))
        assert any("### Instruction:" in d for d in docs) and any("\nOptions:" in d for d in docs)


def _math_rows(folder: Path, lang: str) -> dict[str, list[tuple[str, str]]]:
    """(question, gold) of each math file of one language, as the loaders read them."""
    mgsm = [(r[0], r[1].replace(",", "")) for r in csv.reader(open(folder / "mgsm" / f"mgsm_{lang}.tsv",
                                                                   encoding="utf-8"), delimiter="\t")]
    msvamp = [(row["m_query"], row["response"]) for row in map(json.loads, open(
        folder / "msvamp" / f"test_{language_name(lang)}.json", encoding="utf-8"))]
    return {"mgsm": mgsm, "msvamp": msvamp}


def test_a_dev_split_disjoint_from_the_test_problems_and_every_training_text(tmp_path):
    spec = WorldSpec(languages=LANGS, seed=0, general_docs=300, ability_problems=3000, translation_pairs=200,
                     query_items=400, test_items=100, dev_items=100)
    generate_world(spec, tmp_path)
    training = "\n".join(_training_texts(tmp_path))
    golds = {}
    for lang in LANGS:
        dev, test = _math_rows(tmp_path / "dev", lang), _math_rows(tmp_path / "bench", lang)
        questions = {q for rows in dev.values() for q, _ in rows}
        assert [len(rows) for rows in dev.values()] == [100, 100] and len(questions) == 200  # mgsm, msvamp apart
        assert not questions & {q for rows in test.values() for q, _ in rows}
        leaked = [q for q in questions if q in training]
        assert not leaked, f"{lang}: {len(leaked)} dev problems occur in training text, e.g. {leaked[0]}"
        golds[lang] = [g for rows in dev.values() for _, g in rows]
    assert all(golds[lang] == golds["en"] for lang in LANGS)  # the same problems in every language


def test_the_dev_split_leaves_every_other_file_as_it_was(tmp_path):
    """Dev problems are drawn last: their number changes no training text and no test file."""
    small, more = _small(0), _small(0)
    more.dev_items = 25
    generate_world(small, tmp_path / "a")
    generate_world(more, tmp_path / "b")
    for part in ("general", "ability", "translation", "queries", "bench"):
        assert _digest(tmp_path / "a" / part) == _digest(tmp_path / "b" / part), part
    assert _digest(tmp_path / "a" / "dev") != _digest(tmp_path / "b" / "dev")


def test_every_demo_name_a_configuration_may_use_is_in_the_world(tmp_path):
    """`demo:<name>` is checked at validation against demo_names(); each of those names must be something the
    world really writes (a folder, or a JSONL file by that name), so that the check refuses nothing that works."""
    from linguaforge.pipelines.demo.settings import DEMO_MODELS, demo_names

    generate_world(_small(0), tmp_path)
    names = demo_names("en", [c for c in LANGS if c != "en"])
    assert "dev/mgsm" in names and "bench/xnli" in names and "test/mgsm" not in names
    for name in names:
        if name in DEMO_MODELS:
            continue
        assert (tmp_path / name).is_dir() or (tmp_path / f"{name}.jsonl").is_file(), name
    folders = {p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("*/*") if p.is_dir()}
    assert folders <= set(names), f"the world writes {sorted(folders - set(names))}, which no demo: name reaches"
