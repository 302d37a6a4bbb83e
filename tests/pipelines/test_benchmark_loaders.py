"""Loaders read every official format (fixture files in those shapes), the hub shapes, and refuse bad input
with a message naming the file, the line and the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fsspec
import pytest

from linguaforge.pipelines.benchmarks.loaders import available_languages, load_raw
from linguaforge.pipelines.benchmarks.registry import get_benchmark
from linguaforge.pipelines.errors import InputError

F = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"


def test_mgsm_tsv_strips_thousands_separators():
    rows = load_raw("mgsm", str(F / "mgsm"), "en")
    assert [r["answer"] for r in rows] == ["18", "3", "70000"]
    assert rows[0]["question"].startswith("Janet’s ducks lay 16 eggs")
    assert [r["id"] for r in rows] == ["0", "1", "2"]
    assert load_raw("mgsm", str(F / "mgsm"), "de")[2]["answer"] == "2126"


def test_msvamp_maps_language_names_to_iso_codes():
    rows = load_raw("msvamp", str(F / "msvamp"), "de")  # test_German.json, JSON Lines despite the name
    assert [r["answer"] for r in rows] == ["3", "-3", "5.5"]
    assert rows[0]["question"].startswith("Jack hat 5 Äpfel")
    assert rows[0]["question_en"].startswith("Jack has 5 apples")
    assert available_languages("msvamp", str(F / "msvamp")) == ["de", "en"]


def test_msvamp_jsonl_named_copy(tmp_path):
    shutil.copy(F / "msvamp" / "test_German.json", tmp_path / "test_German.jsonl")  # MindMerger's file name
    assert len(load_raw("msvamp", str(tmp_path), "de")) == 3


def test_xcsqa_dev_jsonl():
    rows = load_raw("xcsqa", str(F / "xcsqa"), "zh")
    assert rows[1]["question"] == "在哪里可以找到杂志和许多其他印刷品？"
    assert [c["label"] for c in rows[1]["choices"]] == list("ABCDE")
    assert rows[1]["choices"][1]["text"] == "书店" and rows[1]["answer"] == "B"
    assert available_languages("xcsqa", str(F / "xcsqa")) == ["zh", "en"]  # the paper's reporting order


@pytest.mark.parametrize("folder", ["xnli", "xnli_jsonl"])
def test_xnli_tsv_and_jsonl_filter_one_language(folder):
    rows = load_raw("xnli", str(F / folder), "de")
    assert [r["answer"] for r in rows] == ["neutral", "contradiction", "entailment"]
    assert rows[0]["premise"] == 'Und er sagte: "Mama, ich bin zu Hause."'  # bare quotes survive
    assert available_languages("xnli", str(F / folder)) == ["zh", "de", "en"]


def test_okapi_mmlu_keeps_only_science_subjects():
    rows = load_raw("mmlu_science", str(F / "mmlu"), "de")
    assert [r["subject"] for r in rows] == ["college_biology", "high_school_physics", "college_chemistry"]
    assert [c["label"] for c in rows[0]["choices"]] == list("ABCD") and rows[1]["answer"] == "C"


def test_single_file_source_and_language_check():
    assert len(load_raw("mgsm", str(F / "mgsm" / "mgsm_de.tsv"), "de")) == 3
    assert available_languages("mgsm", str(F / "mgsm" / "mgsm_de.tsv")) == ["de"]
    with pytest.raises(InputError, match=r"mgsm_de\.tsv holds mgsm language 'de', not 'fr'"):
        load_raw("mgsm", str(F / "mgsm" / "mgsm_de.tsv"), "fr")
    assert len(load_raw("xcsqa", str(F / "xcsqa" / "en" / "dev.jsonl"), "en")) == 3


def test_fsspec_url_source():
    fs = fsspec.filesystem("memory")
    for path in (F / "mgsm").iterdir():
        fs.pipe(f"/bench-mgsm/{path.name}", path.read_bytes())
    rows = load_raw("mgsm", "memory://bench-mgsm", "de")
    assert rows[2]["answer"] == "2126"
    assert available_languages("mgsm", "memory://bench-mgsm") == ["de", "en"]
    with pytest.raises(InputError, match=r"language 'fr' is not in memory:///?bench-mgsm \(no mgsm_fr\.tsv\); languages there: de, en"):
        load_raw("mgsm", "memory://bench-mgsm", "fr")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def test_hub_shapes(hub_cache):
    """A local folder laid out like a hub dataset goes through the same datasets.load_dataset call as an id."""
    mgsm = load_raw("mgsm", f"hf:{F / 'hub' / 'mgsm'}", "en")
    assert [r["answer"] for r in mgsm] == ["3", "70000"]  # answer_number
    assert available_languages("mgsm", f"hf:{F / 'hub' / 'mgsm'}") == ["de", "en"]
    xnli = load_raw("xnli", f"hf:{F / 'hub' / 'xnli'}", "de")
    assert [r["answer"] for r in xnli] == ["entailment", "neutral", "contradiction"]  # ClassLabel 0, 1, 2
    xcsqa = load_raw("xcsqa", f"hf:{F / 'hub' / 'xcsqa'}", "en")  # config X-CSQA-en, split validation
    assert [c["text"] for c in xcsqa[0]["choices"]][:2] == ["complete job", "learn from each other"]
    with pytest.raises(InputError, match=r"cannot load config 'fr'.*mgsm language 'fr'"):
        load_raw("mgsm", f"hf:{F / 'hub' / 'mgsm'}", "fr")


# -- bad input --------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


MALFORMED = [  # (benchmark, file, contents, the error it must give)
    ("mgsm", "mgsm_de.tsv", "Frage eins?\t3\nFrage zwei?\t4\textra\n",
     r"mgsm_de\.tsv, line 2: expected 2 tab-separated columns .* found 3"),
    ("mgsm", "mgsm_de.tsv", "Frage eins?\t3\nFrage zwei?\tdrei\n",
     r"mgsm_de\.tsv, line 2: field 'answer' 'drei' is not a number"),
    ("msvamp", "test_German.json", '{"m_query": "Wie viele?", "response": "3"}\n{"m_query": "Und jetzt?"}\n',
     r"test_German\.json, line 2: field 'answer_number' / 'response' / 'answer' is missing"),
    ("msvamp", "test_German.json", '{"m_query": "Wie viele?", "response": "3"}\n{"m_query": \n',
     r"test_German\.json, line 2: not valid JSON"),
]


@pytest.mark.parametrize(("benchmark", "name", "contents", "error"), MALFORMED)
def test_a_malformed_line_is_named(tmp_path, benchmark, name, contents, error):
    _write(tmp_path / name, contents)
    with pytest.raises(InputError, match=error):
        load_raw(benchmark, str(tmp_path), "de")


def test_xcsqa_answer_not_a_label(tmp_path):
    row = json.loads((F / "xcsqa" / "en" / "dev.jsonl").read_text().splitlines()[0])
    row["answerKey"] = "F"
    _write(tmp_path / "en" / "dev.jsonl", json.dumps(row) + "\n")
    with pytest.raises(InputError, match=r"dev\.jsonl, line 1: field 'answer' 'F' is not one of the choice labels"):
        load_raw("xcsqa", str(tmp_path), "en")


def test_xnli_wrong_column_count_and_missing_column(tmp_path):
    lines = (F / "xnli" / "xnli.test.tsv").read_text().splitlines()
    _write(tmp_path / "a" / "xnli.test.tsv", "\n".join(lines[:3] + [lines[3].rsplit("\t", 2)[0]]) + "\n")
    with pytest.raises(InputError, match=r"xnli\.test\.tsv, line 4: expected 19 tab-separated columns .* found 17"):
        load_raw("xnli", str(tmp_path / "a"), "en")
    _write(tmp_path / "b" / "xnli.test.tsv", "language\tsentence1\tsentence2\nen\ta\tb\n")
    with pytest.raises(InputError, match=r"line 1: header lacks column\(s\) gold_label"):
        load_raw("xnli", str(tmp_path / "b"), "en")


def test_xnli_bad_label(tmp_path):
    _write(tmp_path / "xnli.test.tsv", "language\tgold_label\tsentence1\tsentence2\nen\tmaybe\ta\tb\n")
    with pytest.raises(InputError, match=r"line 2: field 'gold_label' 'maybe' is not one of entailment"):
        load_raw("xnli", str(tmp_path), "en")


def test_language_not_in_file():
    with pytest.raises(InputError, match=r"xnli\.test\.tsv: language 'sw' is not in the file; languages there: de, en, zh"):
        load_raw("xnli", str(F / "xnli"), "sw")
    with pytest.raises(InputError, match=r"xcsqa: language 'de' is not in .*xcsqa .*languages there: zh, en"):
        load_raw("xcsqa", str(F / "xcsqa"), "de")


def test_empty_benchmark(tmp_path):
    with pytest.raises(InputError, match=r"fr_test\.json: no science items for language 'fr'"):
        load_raw("mmlu_science", str(F / "mmlu"), "fr")  # only a history item
    _write(tmp_path / "mgsm_de.tsv", "\n")
    with pytest.raises(InputError, match=r"mgsm_de\.tsv: no items for language 'de'"):
        load_raw("mgsm", str(tmp_path), "de")


def test_bad_sources_and_codes(tmp_path):
    with pytest.raises(InputError, match="no such file or folder, and not an HF dataset id"):
        load_raw("mgsm", str(tmp_path / "missing" / "folder"), "de")
    with pytest.raises(InputError, match="benchmark 'gsm8k' is unknown"):
        load_raw("gsm8k", str(F / "mgsm"), "de")
    with pytest.raises(ValueError, match=r"'German' is not an ISO 639-1 language code.*'de'"):
        load_raw("mgsm", str(F / "mgsm"), "German")
    _write(tmp_path / "mgsm_de.tsv", "")
    (tmp_path / "mgsm_de.tsv").write_bytes(b"Frage\xff\t3\n")
    with pytest.raises(InputError, match=r"mgsm_de\.tsv: not UTF-8"):
        load_raw("mgsm", str(tmp_path), "de")


def test_reads_the_demo_worlds_benchmark_files(tmp_path):
    """The contract with the demo world generator: its files in the official shapes load for every language."""
    from linguaforge.pipelines.demo.world import WorldSpec, generate_world

    langs = ["en", "de", "zh", "sw", "bn"]
    generate_world(WorldSpec(languages=langs, general_docs=10, ability_problems=10, translation_pairs=10,
                             query_items=10, test_items=9), tmp_path)
    folders = {"mgsm": "mgsm", "msvamp": "msvamp", "xcsqa": "xcsqa", "xnli": "xnli", "mmlu_science": "mmlu"}
    for bench, folder in folders.items():
        source = str(tmp_path / "bench" / folder)
        assert sorted(available_languages(bench, source)) == sorted(langs)
        for lang in langs:
            rows = load_raw(bench, source, lang)
            assert len(rows) == (8 if bench == "mmlu_science" else 9)  # item 7 of 8 is US history


def test_xcsqa_official_japanese_folder_is_read_as_ja(tmp_path):
    """The X-CSQA release names Japanese `jap` (X-CSQA/jap/dev.jsonl); it is found, listed and loaded as `ja`."""

    shutil.copytree(F / "xcsqa" / "zh", tmp_path / "jap")
    assert available_languages("xcsqa", str(tmp_path)) == ["ja"]
    assert load_raw("xcsqa", str(tmp_path), "ja") == load_raw("xcsqa", str(F / "xcsqa"), "zh")
    assert load_raw("xcsqa", str(tmp_path / "jap" / "dev.jsonl"), "ja")  # a single file, named by its folder
    with pytest.raises(InputError, match="languages there: ja"):
        load_raw("xcsqa", str(tmp_path), "zh")
    xcsqa = get_benchmark("xcsqa")
    assert xcsqa.hub_config.format(lang=xcsqa.release_code("ja")) == "X-CSQA-jap"
    assert xcsqa.iso_code("jap") == "ja" and get_benchmark("mgsm").release_code("ja") == "ja"


def test_math_files_in_subfolders_are_found_and_two_copies_are_refused(tmp_path):
    """Files deeper in the folder (a release's data/test/) load as listed; two copies of a language are refused."""
    (tmp_path / "data" / "test").mkdir(parents=True)
    shutil.copy(F / "mgsm" / "mgsm_de.tsv", tmp_path / "data" / "test" / "mgsm_de.tsv")
    assert available_languages("mgsm", str(tmp_path)) == ["de"]
    assert load_raw("mgsm", str(tmp_path), "de") == load_raw("mgsm", str(F / "mgsm"), "de")
    (tmp_path / "old").mkdir()
    shutil.copy(F / "mgsm" / "mgsm_de.tsv", tmp_path / "old" / "mgsm_de.tsv")
    with pytest.raises(InputError, match=r"'de' is in 2 files .*data/test/mgsm_de.tsv, old/mgsm_de.tsv"):
        load_raw("mgsm", str(tmp_path), "de")


def test_xnli_folder_without_its_file_is_a_clear_error(tmp_path):
    """A folder with no XNLI table used to recurse without end (listing the languages re-asked for the file)."""
    with pytest.raises(InputError, match=r"no xnli.test.tsv or xnli.test.jsonl\); languages there: none"):
        load_raw("xnli", str(tmp_path), "de")
