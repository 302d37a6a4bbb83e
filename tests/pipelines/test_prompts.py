"""Prompt presets: the MindMerger templates character for character, few-shot native prompts from an
exemplar file, what the encoder reads (`source_text`), and clear errors for bad presets and exemplars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from linguaforge.pipelines.benchmarks.loaders import load_raw
from linguaforge.pipelines.benchmarks.prompts import (
    build_items,
    builtin_presets,
    load_exemplars,
    load_preset,
    stop_strings,
)
from linguaforge.pipelines.errors import InputError

F = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"
MINDMERGER = load_preset("mindmerger")


def test_mindmerger_math_template():
    items = build_items("mgsm", load_raw("mgsm", str(F / "mgsm"), "en"), "en", MINDMERGER)
    question = "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?"
    assert items[1].prompt == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        f"request.\n\n### Instruction:\n{question}\n\n### Response: Let's think step by step.")
    assert items[1].source_text == question  # the encoder reads the raw question
    assert (items[1].gold, items[1].options, items[1].continuations) == ("3", (), ())
    assert items[1].answer_phrases == ("The answer is",)


def test_mindmerger_xcsqa_template_tab_separated_options():
    item = build_items("xcsqa", load_raw("xcsqa", str(F / "xcsqa"), "zh"), "zh", MINDMERGER)[0]
    assert item.prompt == "人们在工作中的目标是什么？\nOptions:A. 完成工作\tB. 互相学习\tC. 杀死动物\tD. 戴帽子\tE. 互相交谈\nAnswer:"
    assert item.source_text == item.prompt  # MindMerger feeds the templated text to both sides
    assert item.options == tuple("ABCDE") and item.continuations == (" A", " B", " C", " D", " E")
    assert item.gold == "A" and item.language == "zh" and item.benchmark == "xcsqa"


def test_mindmerger_xnli_template():
    item = build_items("xnli", load_raw("xnli", str(F / "xnli"), "de"), "de", MINDMERGER)[2]
    assert item.prompt == ("Premise: Und er sagte, Mama, ich bin zu Hause.\n"
                           "Hypothesis: Er sagte seiner Mutter, er sei nach Hause gekommen.\nLabel:")
    assert item.options == ("entailment", "neutral", "contradiction") and item.gold == "entailment"
    assert item.id == "6n"


def test_mmlu_science_uses_the_xcsqa_shape_with_four_options():
    item = build_items("mmlu_science", load_raw("mmlu_science", str(F / "mmlu"), "de"), "de", MINDMERGER)[2]
    assert item.prompt == ("Welches Element hat die Ordnungszahl 6?\nOptions:A. Kohlenstoff\tB. Stickstoff\t"
                           "C. Sauerstoff\tD. Bor\nAnswer:")
    assert item.meta == {"subject": "college_chemistry"}


def test_native_cot_few_shot_in_the_items_language():
    shots = load_exemplars(str(F / "exemplars" / "native_cot_math.json"))
    preset = load_preset("native_cot")
    item = build_items("mgsm", load_raw("mgsm", str(F / "mgsm"), "de"), "de", preset, shots)[1]
    exemplar = ("Frage: Roger hat 5 Tennisbälle. Er kauft 2 weitere Dosen Tennisbälle. Jede Dose enthält 3 "
                "Tennisbälle. Wie viele Tennisbälle hat er jetzt?\nSchritt-für-Schritt-Antwort: Roger begann mit 5 "
                "Bällen. 2 Dosen mit je 3 Tennisbällen sind 6 Tennisbälle. 5 + 6 = 11. Die Antwort lautet 11.")
    question = "Ein Bademantel benötigt 2 Ballen blaue Faser und halb so viel weiße Faser. Wie viele Ballen sind es insgesamt?"
    assert item.prompt == f"{exemplar}\n\nFrage: {question}\nSchritt-für-Schritt-Antwort:"
    assert item.source_text == question
    assert item.answer_phrases == ("The answer is", "Die Antwort lautet")
    assert stop_strings("mgsm", preset, "de", shots) == ["\n\n", "Frage:"]
    # English uses the preset's default prefixes; two exemplars, in file order
    en = build_items("mgsm", load_raw("mgsm", str(F / "mgsm"), "en"), "en", preset, shots)[0]
    assert en.prompt.startswith("Question: Roger has 5 tennis balls.") and en.prompt.count("Question:") == 3
    assert en.prompt.endswith("\nStep-by-Step Answer:")


def test_native_choice_few_shot():
    shots = load_exemplars(str(F / "exemplars" / "native_choice.json"))
    item = build_items("xcsqa", load_raw("xcsqa", str(F / "xcsqa"), "en"), "en", load_preset("native_cot"), shots)[0]
    assert item.prompt == (
        "Question: Where do you keep milk cold?\nA. oven\nB. fridge\nC. garden\nD. car\nE. desk\nAnswer: B\n\n"
        "Question: What do people aim to do at work?\nA. complete job\nB. learn from each other\nC. kill animals\n"
        "D. wear hats\nE. talk to each other\nAnswer:")


def test_stop_strings_of_mindmerger():
    assert stop_strings("mgsm", MINDMERGER, "en") == ["\n\n### Instruction"]
    assert stop_strings("xnli", MINDMERGER, "en") == ["\n"]


def test_exemplar_errors(tmp_path):
    preset = load_preset("native_cot")
    rows = load_raw("mgsm", str(F / "mgsm"), "de")
    with pytest.raises(InputError, match="needs an exemplar file"):
        build_items("mgsm", rows, "de", preset, None)
    shots = load_exemplars(str(F / "exemplars" / "native_choice.json"))
    with pytest.raises(InputError, match=r"native_choice\.json: no exemplars for language 'de' \(it has en\)"):
        build_items("mgsm", rows, "de", preset, shots)
    with pytest.raises(InputError, match=r"native_choice\.json, language 'en', exemplar 0: field 'premise' is missing"):
        build_items("xnli", load_raw("xnli", str(F / "xnli"), "en"), "en", preset, shots)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"de": {"exemplars": [{"question": "Wie viele?"}]}}))
    with pytest.raises(InputError, match=r"bad\.json, language 'de', exemplar 0: field 'target' is missing"):
        load_exemplars(str(bad))
    bad.write_text(json.dumps({"German": {"exemplars": [{"question": "?", "target": "1"}]}}))
    with pytest.raises(ValueError, match=r"bad\.json: key: 'German' is not an ISO 639-1"):
        load_exemplars(str(bad))
    with pytest.raises(InputError, match="not found"):
        load_exemplars(str(tmp_path / "missing.json"))


def test_preset_files_and_errors(tmp_path):
    assert set(builtin_presets()) >= {"mindmerger", "native_cot"}
    custom = tmp_path / "plain.yaml"
    custom.write_text("description: bare question\nbenchmarks:\n  mgsm:\n    template: \"Q: {question}\\nA:\"\n")
    item = build_items("mgsm", load_raw("mgsm", str(F / "mgsm"), "en"), "en", load_preset(str(custom)))[1]
    assert item.prompt.startswith("Q: A robe takes") and item.prompt.endswith("\nA:")
    with pytest.raises(InputError, match="preset 'plain' has no template for benchmark 'xnli'"):
        build_items("xnli", load_raw("xnli", str(F / "xnli"), "en"), "en", load_preset(str(custom)))
    custom.write_text("benchmarks:\n  mgsm:\n    template: \"Q: {question} {answer}\"\n")
    with pytest.raises(InputError, match=r"template field\(s\) \['answer'\] are not defined"):  # no gold leaks
        build_items("mgsm", load_raw("mgsm", str(F / "mgsm"), "en"), "en", load_preset(str(custom)))
    custom.write_text("benchmarks:\n  mgsm:\n    templat: \"Q\"\n")
    with pytest.raises(InputError, match="field 'template' is missing"):
        load_preset(str(custom))
    with pytest.raises(InputError, match="neither a built-in preset"):
        load_preset("chatml")
