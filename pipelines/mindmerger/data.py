"""MindMerger training data: (source text, LLM prompt, target) examples, tokenized once, with skips counted.

Mapping stage: X→English translation pairs, read from line-aligned `train.<iso>` / `train.en` files; the
encoder reads the X sentence, the LLM gets no text prompt and learns to write the English sentence.

Augmentation stage: translated task queries, one JSON list per language (`<folder>/<iso>.json`):
- math: rows {query, response}; the encoder reads the raw query, the LLM the query in the task template,
  and the target is the response;
- csqa: rows {question, choices [{label, text}], answer}; xnli: rows {premise, hypothesis, answer};
  both sides read the templated text (the official recipe), the target is the answer option.
The templates are the evaluation's own (`mindmerger` prompt preset), so training and scoring prompts
are the same text.

Examples over a length limit are skipped and counted per reason and language, never truncated: a
truncated source or target would train the mapping on text that no longer says what the target says.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import numpy as np
import torch

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.languages import check_language
from linguaforge.pipelines.locations import check_scheme
from linguaforge.pipelines.reading import read_json

TASK_BENCHMARK = {"math": "mgsm", "csqa": "xcsqa", "xnli": "xnli"}  # whose evaluation template a task uses


@dataclass(frozen=True)
class TextExample:
    source: str  # what the encoder reads
    prompt: str  # what the LLM reads after the boundary ("" in the mapping stage)
    target: str  # what the LLM learns to write
    language: str


@dataclass
class Example:
    source_ids: list[int]
    prompt_ids: list[int]
    target_ids: list[int]  # EOS included
    language: str


@dataclass
class TokenizedSet:
    examples: list[Example]
    skipped: Counter = field(default_factory=Counter)  # "<reason>/<lang>" → count

    def report(self) -> dict[str, int]:
        return dict(sorted(self.skipped.items()))


# -- reading ------------------------------------------------------------------------------------------
def _read_lines(uri: str) -> list[str]:
    check_scheme(uri, "translation file")
    try:
        with fsspec.open(uri, "r", encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        raise InputError(f"translation file {uri}: not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"translation file {uri}: not UTF-8 text (byte {exc.start})") from None
    except IsADirectoryError:
        raise InputError(f"translation file {uri}: is a folder") from None


def read_translation_pairs(folder: str | Path, language: str) -> list[TextExample]:
    """X→English pairs from `<folder>/train.<iso>` and `<folder>/train.en` (one sentence per line)."""
    check_language(language, "translation language")
    folder = str(folder).rstrip("/")
    src_uri, tgt_uri = f"{folder}/train.{language}", f"{folder}/train.en"
    sources, targets = _read_lines(src_uri), _read_lines(tgt_uri)
    if len(sources) != len(targets):
        raise InputError(f"translation files are not line-aligned: {src_uri} has {len(sources)} lines but "
                         f"{tgt_uri} has {len(targets)}")
    pairs = [TextExample(s.strip(), "", t.strip(), language) for s, t in zip(sources, targets, strict=True)
             if s.strip() and t.strip()]
    if not pairs:
        raise InputError(f"translation files {src_uri} / {tgt_uri} hold no sentence pairs")
    return pairs


def read_queries(folder: str | Path, language: str) -> list[dict]:
    """The translated task queries of one language: `<folder>/<iso>.json`, a non-empty JSON list."""
    check_language(language, "query language")
    uri = f"{str(folder).rstrip('/')}/{language}.json"
    rows = read_json(uri, "augmentation data", expect=list)
    if not rows:
        raise InputError(f"augmentation data {uri} is empty: the augmentation stage has nothing to train on")
    return [dict(r, _where=f"{uri}, row {i}") for i, r in enumerate(rows)]


def _field(row: dict, name: str):
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"{row['_where']}: field {name!r} is missing or empty")
    return value


def template_queries(rows: list[dict], task: str, language: str) -> list[TextExample]:
    """Rows of one language → (encoder text, LLM prompt, target) with the evaluation's templates."""
    from linguaforge.pipelines.benchmarks.prompts import build_items, load_preset

    if task not in TASK_BENCHMARK:
        raise InputError(f"augmentation task must be one of {sorted(TASK_BENCHMARK)}, got {task!r}")
    preset = load_preset("mindmerger")
    benchmark = TASK_BENCHMARK[task]
    spec = preset.for_benchmark(benchmark)
    canonical, targets = [], []
    for i, row in enumerate(rows):
        if task == "math":
            canonical.append({"id": str(i), "question": str(_field(row, "query")).strip(), "answer": "0"})
            targets.append(" " + str(_field(row, "response")).strip())
            continue
        if task == "csqa":
            choices = _field(row, "choices")
            labels = [c.get("label") for c in choices] if isinstance(choices, list) else []
            if len(labels) < 2 or not all(isinstance(c, dict) and "text" in c for c in choices):
                raise InputError(f"{row['_where']}: field 'choices' must list at least 2 {{label, text}} objects")
            base = {"question": str(_field(row, "question")), "choices": choices}
        else:
            base = {"premise": str(_field(row, "premise")), "hypothesis": str(_field(row, "hypothesis"))}
            labels = None
        answer = str(_field(row, "answer")).strip()
        if labels is not None and answer not in labels:
            raise InputError(f"{row['_where']}: answer {answer!r} is not one of the choice labels {labels}")
        canonical.append({"id": str(i), **base, "answer": answer})
        targets.append(spec.get("continuation", " {option}").format(option=answer))
    items = build_items(benchmark, canonical, language, preset)
    return [TextExample(it.source_text, it.prompt, t, language) for it, t in zip(items, targets, strict=True)]


# -- tokenizing -----------------------------------------------------------------------------------------
def tokenize(texts: list[TextExample], encoder_tokenizer, llm_tokenizer, max_source_len: int,
             max_target_len: int) -> TokenizedSet:
    """Encoder side with its special tokens (mT5 appends </s>); LLM side without (BOS is placed by the model),
    EOS appended as an id, not as text that might tokenize differently. Over-long examples are skipped."""
    eos = llm_tokenizer.eos_token_id
    if eos is None:
        raise InputError("the LLM tokenizer has no EOS token: MindMerger appends one to every target")
    sources = encoder_tokenizer([t.source for t in texts], add_special_tokens=True)["input_ids"]
    prompts = llm_tokenizer([t.prompt for t in texts], add_special_tokens=False)["input_ids"]
    own_space = marks_text_start(llm_tokenizer)
    targets = llm_tokenizer([target_text(t.target, own_space) for t in texts], add_special_tokens=False)["input_ids"]
    out = TokenizedSet([])
    for text, src, prm, tgt in zip(texts, sources, prompts, targets, strict=True):
        if len(src) > max_source_len:
            out.skipped[f"source_too_long/{text.language}"] += 1
        elif len(prm) + len(tgt) + 1 > max_target_len:
            out.skipped[f"prompt_target_too_long/{text.language}"] += 1
        elif not tgt:
            out.skipped[f"empty_target/{text.language}"] += 1
        else:
            out.examples.append(Example(list(src), list(prm), [*tgt, eos], text.language))
    if not out.examples:
        raise InputError(f"every example was skipped ({out.report()}); raise the length limits "
                         f"(max_source_len={max_source_len}, max_target_len={max_target_len})")
    return out


def marks_text_start(tokenizer) -> bool:
    """Whether the tokenizer writes a word boundary at the start of every text itself (SentencePiece's dummy
    prefix, a legacy `Prepend("▁")` normaliser, Metaspace: Llama 2, MetaMath, Mistral): then "answer" alone
    gives the ids that "answer" has after a space inside a text. A byte-level BPE (Llama 3, the demo's LLM)
    adds nothing: there the space must be written."""
    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    head, whole = ids("the"), ids("the answer")
    return whole[: len(head)] == head and whole[len(head):] == ids("answer")


def target_text(target: str, own_space: bool) -> str:
    """A task target reads after its prompt, so it is written with the space that separates them (" 42",
    " B"). A tokenizer that marks the text start itself would turn that space into a second, extra `▁`
    token: there the target goes without it, which gives exactly the official code's ids
    (`tokenizer(response)` with EOS, no BOS)."""
    return target[1:] if own_space and target.startswith(" ") else target


def split_dev(examples: list[Example], dev_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded held-out share for dev perplexity (at least one example on each side)."""
    if len(examples) < 2:
        raise InputError(f"{len(examples)} example(s): need at least 2 to hold one out for dev perplexity")
    n_dev = min(len(examples) - 1, max(1, round(len(examples) * dev_fraction)))
    perm = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    dev = sorted(perm[:n_dev])
    train = sorted(perm[n_dev:])
    return [examples[i] for i in train], [examples[i] for i in dev]


# -- storage (Parquet, no pickle) -------------------------------------------------------------------------
def save_examples(examples: list[Example], path: Path) -> None:
    import pyarrow as pa  # here: the model and its batches need no pyarrow (a GPU check imports them without)
    import pyarrow.parquet as pq

    ints = pa.list_(pa.int32())
    table = pa.table({
        "source_ids": pa.array([e.source_ids for e in examples], ints),
        "prompt_ids": pa.array([e.prompt_ids for e in examples], ints),
        "target_ids": pa.array([e.target_ids for e in examples], ints),
        "language": pa.array([e.language for e in examples], pa.string()),
    })
    pq.write_table(table, path)


def load_examples(path: Path) -> list[Example]:
    import pyarrow.parquet as pq

    t = pq.read_table(path).to_pydict()
    return [Example(s, p, g, lang) for s, p, g, lang in
            zip(t["source_ids"], t["prompt_ids"], t["target_ids"], t["language"], strict=True)]


# -- batches ------------------------------------------------------------------------------------------------
def collate(examples: list[Example], source_states: list[torch.Tensor] | None = None,
            with_targets: bool = True) -> dict[str, torch.Tensor]:
    """Right-padded tensors the model packs itself (model.pack): encoder ids (or cached states, [n_i, d_enc]
    each) with their mask, and per row the LLM prompt tokens followed by the target tokens."""
    B = len(examples)
    S = max(len(e.source_ids) for e in examples)
    llm_rows = [e.prompt_ids + (e.target_ids if with_targets else []) for e in examples]
    T = max(1, max(len(r) for r in llm_rows))
    source_mask = torch.zeros(B, S, dtype=torch.long)
    llm_ids = torch.zeros(B, T, dtype=torch.long)
    for b, (e, row) in enumerate(zip(examples, llm_rows, strict=True)):
        source_mask[b, : len(e.source_ids)] = 1
        llm_ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
    batch = {"source_mask": source_mask, "llm_ids": llm_ids,
             "prompt_len": torch.tensor([len(e.prompt_ids) for e in examples]),
             "llm_len": torch.tensor([len(r) for r in llm_rows])}
    if source_states is None:
        source_ids = torch.zeros(B, S, dtype=torch.long)  # pad id 0: padded places are masked anyway
        for b, e in enumerate(examples):
            source_ids[b, : len(e.source_ids)] = torch.tensor(e.source_ids, dtype=torch.long)
        batch["source_ids"] = source_ids
    else:
        states = source_states[0].new_zeros(B, S, source_states[0].shape[-1])
        for b, s in enumerate(source_states):
            states[b, : len(s)] = s
        batch["source_states"] = states
    return batch


def target_tokens(examples: list[Example]) -> int:
    """Tokens that carry loss: targets with their EOS."""
    return int(np.sum([len(e.target_ids) for e in examples]))
