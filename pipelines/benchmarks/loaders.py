"""Loaders: read a benchmark's test items for one language from its official files or from the HF hub.

A data source is one of
- a local folder or any fsspec URL (`s3://bucket/mgsm/`) holding the official files,
- one official file (`.../mgsm_de.tsv`, `.../xnli.test.tsv`),
- `hf:<dataset id>` (or a bare `owner/name` that is not a path here): `datasets.load_dataset` with the
  benchmark's per-language config and split; `hf:` alone means the benchmark's default hub dataset.

Every loader returns the same canonical rows per task, whatever the source:
- math:   {id, question, answer (number as text, separators removed), question_en (MSVAMP only)}
- choice: {id, question, choices: [{label, text}], answer (a label), subject (m-MMLU only)}
- nli:    {id, premise, hypothesis, answer (a label word)}

Bad input raises `InputError` naming the file, the line (or item) and the field.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import fsspec

from linguaforge.pipelines.benchmarks.registry import XNLI_LABELS, Benchmark, get_benchmark
from linguaforge.pipelines.benchmarks.scoring import number_text, parse_gold_number
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.languages import ISO_639_1, check_language, language_name
from linguaforge.pipelines.locations import url_to_fs

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_CODE_BY_NAME = {name.lower(): code for code, name in ISO_639_1.items()}


# -- public API -------------------------------------------------------------------------------------
def load_raw(benchmark: str | Benchmark, source: str, language: str,
             storage_options: dict | None = None) -> list[dict]:
    """The canonical rows of `benchmark` in `language` from `source` (see the module docstring)."""
    bench = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    language = check_language(language, f"{bench.name} language")
    src = _resolve(bench, source, storage_options)
    if src.hub_id is not None:
        rows = _load_hub(bench, src.hub_id, language)
        where = f"HF dataset {src.hub_id} [{bench.hub_config.format(lang=bench.release_code(language))}/{bench.hub_split}]"
    else:
        path = _language_file(bench, src, language)
        rows = _READERS[bench.file_kind](_read_text(src.fs, path), src.fs.unstrip_protocol(path), bench, language)
        where = src.fs.unstrip_protocol(path)
    if not rows:
        what = " science" if bench.subjects else ""
        raise InputError(f"{where}: no{what} items for language {language!r} ({bench.name} is empty there)")
    return rows


def available_languages(benchmark: str | Benchmark, source: str, storage_options: dict | None = None) -> list[str]:
    """ISO codes of the languages `source` holds for `benchmark`, in the benchmark's reporting order."""
    bench = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    src = _resolve(bench, source, storage_options)
    if src.hub_id is not None:
        import datasets

        prefix, suffix = bench.hub_config.split("{lang}")
        try:
            configs = datasets.get_dataset_config_names(src.hub_id)
        except (ValueError, datasets.exceptions.DatasetNotFoundError) as exc:
            raise InputError(f"HF dataset {src.hub_id}: cannot list its configs for {bench.name}: {exc}") from None
        found = {bench.iso_code(c[len(prefix):len(c) - len(suffix) or None]) for c in configs
                 if c.startswith(prefix) and c.endswith(suffix)}
    elif bench.file_kind == "xnli_table":
        path = _language_file(bench, src, None)
        found = {r["language"] for r in _xnli_table_rows(_read_text(src.fs, path), src.fs.unstrip_protocol(path))}
    elif not src.is_dir:
        found = {_language_of_file(bench, src.path)} - {None}
    else:
        found = {code for _, code in _language_files(bench, src)}
    return _reporting_order(bench, found)


def _reporting_order(bench: Benchmark, codes: set[str]) -> list[str]:
    """The ISO codes among `codes`, in the order the benchmark's paper reports its languages."""
    order = {c: i for i, c in enumerate(bench.languages)}
    return sorted((c for c in codes if c in ISO_639_1), key=lambda c: (order.get(c, len(order)), c))


# -- sources --------------------------------------------------------------------------------------
@dataclass
class _Source:
    fs: fsspec.AbstractFileSystem | None = None
    path: str = ""
    is_dir: bool = False
    hub_id: str | None = None


def _resolve(bench: Benchmark, source: str, storage_options: dict | None) -> _Source:
    if not source:
        raise InputError(f"{bench.name}: the data source is empty (give a folder, a file, a URL or hf:<dataset id>)")
    if source.startswith("hf:"):
        return _Source(hub_id=source[3:] or bench.hub_id)
    fs, path = url_to_fs(source, "benchmark data", storage_options)
    if fs.exists(path):
        return _Source(fs=fs, path=path, is_dir=fs.isdir(path))
    if "://" not in source and _HUB_ID.fullmatch(source):
        return _Source(hub_id=source)
    raise InputError(f"{bench.name} data source {source!r}: no such file or folder, and not an HF dataset id")


def _language_file(bench: Benchmark, src: _Source, language: str | None) -> str:
    """The file holding `language` (None: the one shared file of a single-file benchmark)."""
    if not src.is_dir:
        named = _language_of_file(bench, src.path)
        if language is not None and named is not None and named != language:
            raise InputError(f"{src.fs.unstrip_protocol(src.path)} holds {bench.name} language {named!r}, "
                             f"not {language!r}")
        return src.path
    codes = dict.fromkeys([bench.release_code(language), language]) if language else [""]
    names = [p.format(lang=code, name=language_name(language) if language else "")
             for p in _patterns(bench) for code in codes]
    for name in names:
        path = f"{src.path.rstrip('/')}/{name}"
        if src.fs.exists(path):
            return path
    folder = src.fs.unstrip_protocol(src.path)
    listed = _language_files(bench, src)  # files deeper in the folder (a release's data/test/) count too
    if nested := [rel for rel, code in listed if language is not None and code == language]:
        if len(nested) > 1:  # two copies of one language: which one to score is the user's choice
            raise InputError(f"{bench.name}: language {language!r} is in {len(nested)} files under {folder} "
                             f"({', '.join(nested)}); point the source at one of them or at its folder")
        return f"{src.path.rstrip('/')}/{nested[0]}"
    present = _reporting_order(bench, {code for _, code in listed})
    wanted = f"language {language!r}" if language else "the data file"
    raise InputError(f"{bench.name}: {wanted} is not in {folder} (no {' or '.join(names)}); "
                     f"languages there: {', '.join(present) or 'none'}")


def _language_files(bench: Benchmark, src: _Source) -> list[tuple[str, str]]:
    """(path relative to the folder, ISO code) of every file in the folder, at any depth, whose official name
    says which language it holds."""
    root = src.path.rstrip("/")
    relpaths = sorted(path[len(root) + 1:] for path in src.fs.find(src.path))
    return [(rel, code) for rel in relpaths if (code := _language_of_file(bench, rel))]


def _patterns(bench: Benchmark) -> list[str]:
    if bench.file_kind == "msvamp_jsonl":
        return [bench.file_pattern, bench.file_pattern + "l"]  # MindMerger's copy is named .jsonl
    if bench.file_kind == "xnli_table":
        return [bench.file_pattern, bench.file_pattern.replace(".tsv", ".jsonl")]
    return [bench.file_pattern]


def _language_of_file(bench: Benchmark, relpath: str) -> str | None:
    """The ISO code a file's official name says it holds (MSVAMP names languages in English)."""
    relpath = relpath.replace("\\", "/")
    for pattern in _patterns(bench):
        if "{" not in pattern:
            continue
        regex = re.escape(pattern).replace(r"\{lang\}", r"(?P<lang>[A-Za-z_-]+)").replace(r"\{name\}", r"(?P<name>[A-Za-z ]+)")
        # a single file is matched by its name; files found in a folder by their path relative to it
        m = re.fullmatch(regex, relpath) or re.fullmatch(regex, relpath.rsplit("/", 1)[-1])
        if m is None and "/" in pattern:
            m = re.search("(?:^|/)" + regex + "$", relpath)
        if m:
            if m.groupdict().get("name"):
                return _CODE_BY_NAME.get(m["name"].lower())
            return bench.iso_code(m["lang"])
    return None


def _read_text(fs, path: str) -> str:
    with fs.open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{fs.unstrip_protocol(path)}: not UTF-8 text ({exc})") from None


# -- official file readers ------------------------------------------------------------------------
def _read_mgsm_tsv(text: str, where: str, bench: Benchmark, language: str) -> list[dict]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 2:
            raise InputError(f"{where}, line {n}: expected 2 tab-separated columns (question, answer), "
                             f"found {len(cols)}")
        rows.append(_math_row({"question": cols[0], "answer": cols[1]}, f"{where}, line {n}", str(len(rows))))
    return rows


def _json_lines(text: str, where: str) -> list[tuple[str, dict]]:
    """(where, object) per row of a JSON Lines file; a JSON array is accepted too (some copies are arrays)."""
    if text.lstrip().startswith("["):
        return _json_array(text, where)
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}, line {n}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{where}, line {n}: expected a JSON object, found {type(obj).__name__}")
        out.append((f"{where}, line {n}", obj))
    return out


def _json_array(text: str, where: str) -> list[tuple[str, dict]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise InputError(f"{where}: expected a JSON array of items, found {type(data).__name__}")
    out = []
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise InputError(f"{where}, item {i}: expected a JSON object, found {type(obj).__name__}")
        out.append((f"{where}, item {i}", obj))
    return out


def _read_msvamp(text: str, where: str, bench: Benchmark, language: str) -> list[dict]:
    return [_math_row(obj, w, str(i)) for i, (w, obj) in enumerate(_json_lines(text, where))]


def _read_csqa(text: str, where: str, bench: Benchmark, language: str) -> list[dict]:
    return [_choice_row(obj, w, str(i)) for i, (w, obj) in enumerate(_json_lines(text, where))]


def _read_okapi(text: str, where: str, bench: Benchmark, language: str) -> list[dict]:
    rows = [_choice_row(obj, w, str(i)) for i, (w, obj) in enumerate(_json_array(text, where))]
    return [r for r in rows if r["subject"] in bench.subjects]


def _xnli_table_rows(text: str, where: str) -> list[dict]:
    """Rows of an XNLI table (TSV with a header, or JSONL), each with `_where`."""
    if where.endswith(".jsonl") or text.lstrip().startswith(("{", "[")):
        return [{**obj, "_where": w} for w, obj in _json_lines(text, where)]
    reader = csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)  # XNLI text has bare quotes
    header = next(reader, None)
    if not header:
        raise InputError(f"{where}: empty file (expected a header line with language, gold_label, sentence1, sentence2)")
    missing = [c for c in ("language", "gold_label", "sentence1", "sentence2") if c not in header]
    if missing:
        raise InputError(f"{where}, line 1: header lacks column(s) {', '.join(missing)} (found {', '.join(header)})")
    rows = []
    for cols in reader:
        n = reader.line_num
        if not any(c.strip() for c in cols):
            continue
        if len(cols) != len(header):
            raise InputError(f"{where}, line {n}: expected {len(header)} tab-separated columns as in the header, "
                             f"found {len(cols)}")
        rows.append({**dict(zip(header, cols, strict=True)), "_where": f"{where}, line {n}"})
    return rows


def _read_xnli(text: str, where: str, bench: Benchmark, language: str) -> list[dict]:
    table = _xnli_table_rows(text, where)
    for row in table:
        if "language" not in row:
            raise InputError(f"{row['_where']}: field 'language' is missing")
    rows = [_nli_row(r, r["_where"], str(i)) for i, r in enumerate(x for x in table if x["language"] == language)]
    if not rows:
        present = sorted({r["language"] for r in table})
        raise InputError(f"{where}: language {language!r} is not in the file; languages there: {', '.join(present)}")
    return rows


_READERS: dict[str, Callable[[str, str, Benchmark, str], list[dict]]] = {
    "mgsm_tsv": _read_mgsm_tsv, "msvamp_jsonl": _read_msvamp, "csqa_jsonl": _read_csqa,
    "xnli_table": _read_xnli, "okapi_mmlu_json": _read_okapi,
}


# -- HF hub -------------------------------------------------------------------------------------
def _load_hub(bench: Benchmark, dataset_id: str, language: str) -> list[dict]:
    import datasets

    config = bench.hub_config.format(lang=bench.release_code(language))
    try:
        ds = datasets.load_dataset(dataset_id, name=config, split=bench.hub_split)
    except (ValueError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise InputError(f"HF dataset {dataset_id}: cannot load config {config!r} split {bench.hub_split!r} "
                         f"for {bench.name} language {language!r}: {exc}") from None
    where = f"HF dataset {dataset_id} [{config}/{bench.hub_split}]"
    make = {"math": _math_row, "choice": _choice_row, "nli": _nli_row}[bench.task]
    rows = [make(dict(row), f"{where}, row {i}", str(i)) for i, row in enumerate(ds)]
    return [r for r in rows if r.get("subject") in bench.subjects] if bench.subjects else rows


# -- canonical rows (official and hub field names) --------------------------------------------------
def _field(row: dict, where: str, *names: str) -> object:
    for name in names:
        if row.get(name) is not None:
            return row[name]
    raise InputError(f"{where}: field {' / '.join(repr(n) for n in names)} is missing")


def _text(row: dict, where: str, *names: str) -> str:
    value = _field(row, where, *names)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: field {names[0]!r} must be non-empty text, found {value!r}")
    return value.strip()


def _math_row(row: dict, where: str, index: str) -> dict:
    question = _text(row, where, "question", "m_query")
    gold = _field(row, where, "answer_number", "response", "answer")
    try:
        value = parse_gold_number(str(gold))
    except ValueError:
        raise InputError(f"{where}: field 'answer' {gold!r} is not a number") from None
    out = {"id": str(row.get("id", index)), "question": question, "answer": number_text(value)}
    if isinstance(row.get("query"), str):
        out["question_en"] = row["query"]
    return out


def _choice_row(row: dict, where: str, index: str) -> dict:
    if "instruction" in row or "option_a" in row:  # Okapi m-MMLU
        question = _text(row, where, "instruction")
        choices = [{"label": L, "text": str(_field(row, where, f"option_{L.lower()}")).strip()} for L in "ABCD"]
        answer = _field(row, where, "answer")
    elif isinstance(row.get("question"), dict):  # CSQA: question.stem, question.choices
        q = row["question"]
        question = _text(q, f"{where}, question", "stem")
        raw = _field(q, f"{where}, question", "choices")
        if isinstance(raw, dict):  # the hub stores a list of records as columns: {label: [...], text: [...]}
            raw = [{"label": lab, "text": t} for lab, t in zip(raw.get("label", []), raw.get("text", []), strict=False)]
        if not isinstance(raw, list) or len(raw) < 2:
            raise InputError(f"{where}: field 'question.choices' must list at least 2 choices, found {raw!r}")
        choices = []
        for j, c in enumerate(raw):
            if not isinstance(c, dict) or "label" not in c or "text" not in c:
                raise InputError(f"{where}: field 'question.choices[{j}]' needs 'label' and 'text', found {c!r}")
            choices.append({"label": str(c["label"]).strip(), "text": str(c["text"]).strip()})
        answer = _field(row, where, "answerKey")
    else:  # generic MMLU shape: question, choices [text...], answer (index or letter)
        question = _text(row, where, "question")
        texts = _field(row, where, "choices")
        if not isinstance(texts, list) or len(texts) < 2:
            raise InputError(f"{where}: field 'choices' must list at least 2 choices, found {texts!r}")
        choices = [{"label": chr(ord("A") + j), "text": str(t).strip()} for j, t in enumerate(texts)]
        answer = _field(row, where, "answer")
        if isinstance(answer, int) and 0 <= answer < len(choices):
            answer = choices[answer]["label"]
    labels = [c["label"] for c in choices]
    answer = str(answer).strip()
    if answer not in labels:
        raise InputError(f"{where}: field 'answer' {answer!r} is not one of the choice labels {labels}")
    item_id = str(row.get("id", index))
    subject = row.get("subject") or (item_id.split("/", 1)[0] if "/" in item_id else None)
    return {"id": item_id, "question": question, "choices": choices, "answer": answer, "subject": subject}


def _nli_row(row: dict, where: str, index: str) -> dict:
    premise = _text(row, where, "sentence1", "premise")
    hypothesis = _text(row, where, "sentence2", "hypothesis")
    label = _field(row, where, "gold_label", "label")
    if isinstance(label, int) and 0 <= label < len(XNLI_LABELS):
        label = XNLI_LABELS[label]
    label = str(label).strip().lower()
    if label not in XNLI_LABELS:
        raise InputError(f"{where}: field 'gold_label' {label!r} is not one of {', '.join(XNLI_LABELS)}")
    item_id = row.get("pairID") or row.get("id") or index
    return {"id": str(item_id), "premise": premise, "hypothesis": hypothesis, "answer": label}
