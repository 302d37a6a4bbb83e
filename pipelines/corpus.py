"""Corpus preparation: read documents from anywhere, normalise, filter (counted), tokenize, pack into blocks.

Sources: `hf:<dataset id>[@config]` (HF datasets, streamed), or a .jsonl / .parquet / .txt file at any
fsspec URL (local path, s3://, gs://, ...). Output: Parquet shards `blocks-NNNNN.parquet` with columns

    input_ids  fixed_size_list<int32>[block_size]
    n_real     int32     real tokens at the start of the block; the rest is padding (document packing only)
    first_doc  int64     index of the first document the block holds tokens of
    last_doc   int64     index of the last one (== first_doc when the block holds one document only)

plus `stats.json` with documents, tokens, blocks and every drop, counted.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.interrupt import check_stop
from linguaforge.pipelines.locations import url_to_fs
from linguaforge.pipelines.settings import CorpusPrepConfig, CorpusSource

Progress = Callable[[int, int, dict[str, Any]], None]
BLOCKS_PER_SHARD = 50_000
_TOKENIZE_BATCH = 1000


def _format_of(spec: CorpusSource) -> str:
    if spec.format != "auto":
        return spec.format
    if spec.uri.startswith("hf:"):
        return "hf"
    name = spec.uri.lower().removesuffix(".gz")
    for suffix, fmt in ((".jsonl", "jsonl"), (".json", "jsonl"), (".parquet", "parquet"), (".txt", "text")):
        if name.endswith(suffix):
            return fmt
    raise InputError(f"corpus {spec.uri}: cannot tell the format from the name; set format to jsonl, parquet, "
                     "text or hf")


def read_documents(spec: CorpusSource, language: str, storage_options: dict | None = None) -> Iterator[str]:
    """Raw document texts of the corpus in `language`, in source order, at most spec.max_documents of them."""
    fmt = _format_of(spec)
    docs = _read_hf(spec) if fmt == "hf" else _read_file(spec, language, fmt, dict(storage_options or {}))
    for i, text in enumerate(docs):
        if spec.max_documents is not None and i >= spec.max_documents:
            return
        yield text


def check_readable(spec: CorpusSource, language: str, storage_options: dict | None = None) -> None:
    """Read the first document, so that a missing, unreadable or mis-formatted file is refused before any
    stage runs (hub datasets are left to the stage: checking them needs the network)."""
    if _format_of(spec) != "hf":
        next(iter(read_documents(spec, language, storage_options)), None)


def _read_hf(spec: CorpusSource) -> Iterator[str]:
    import datasets

    name, _, config = spec.uri.removeprefix("hf:").partition("@")
    dataset = datasets.load_dataset(name, config or None, split=spec.split, streaming=True)
    for row in dataset:
        yield _field(row, spec, "row")


def _read_file(spec: CorpusSource, language: str, fmt: str, options: dict) -> Iterator[str]:
    """The file's documents; what goes wrong reading it (encoding, a damaged Parquet file, no access) is
    an InputError that names the corpus."""
    try:
        yield from _read_file_unchecked(spec, language, fmt, options)
    except InputError:
        raise
    except UnicodeDecodeError as exc:
        raise InputError(f"corpus ({language}) {spec.uri}: not UTF-8 text (byte {exc.start} of a line "
                         f"cannot be decoded; is it a {fmt} file?)") from None
    except (pa.ArrowException, OSError) as exc:
        if fmt == "parquet" and not isinstance(exc, FileNotFoundError | PermissionError):
            raise InputError(f"corpus ({language}) {spec.uri}: not a readable Parquet file ({exc})") from None
        raise InputError(f"corpus ({language}) {spec.uri}: cannot be read ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # object-store clients raise their own hierarchies (botocore's NoCredentialsError)
        if "credential" not in f"{type(exc).__name__} {exc}".lower():
            raise
        raise InputError(f"corpus ({language}) {spec.uri}: no usable credentials ({type(exc).__name__}); set "
                         "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL) in the environment"
                         ) from None


def _read_file_unchecked(spec: CorpusSource, language: str, fmt: str, options: dict) -> Iterator[str]:
    fs, path = url_to_fs(spec.uri, f"corpus ({language})", options)
    if not fs.exists(path):
        raise InputError(f"corpus ({language}) {spec.uri}: file does not exist")
    compression = "gzip" if path.endswith(".gz") else None
    if fmt == "parquet":
        with fs.open(path, "rb") as f:
            parquet = pq.ParquetFile(f)
            if spec.text_field not in parquet.schema_arrow.names:
                raise InputError(f"corpus {spec.uri}: no column {spec.text_field!r} "
                                 f"(columns: {', '.join(parquet.schema_arrow.names)})")
            for batch in parquet.iter_batches(columns=[spec.text_field]):
                yield from (t if t is not None else "" for t in batch.column(0).to_pylist())
        return
    with fs.open(path, "rt", encoding="utf-8", compression=compression) as f:
        for lineno, line in enumerate(f, 1):
            if fmt == "text":
                yield line.rstrip("\n")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"corpus {spec.uri}, line {lineno}: not valid JSON ({exc.msg})") from None
            yield _field(row, spec, f"line {lineno}")


def _field(row: Any, spec: CorpusSource, where: str) -> str:
    if not isinstance(row, dict) or spec.text_field not in row:
        raise InputError(f"corpus {spec.uri}, {where}: no field {spec.text_field!r}")
    value = row[spec.text_field]
    return value if isinstance(value, str) else ""


_SPACES = re.compile(r"[^\S\n]+")
_NEWLINES = re.compile(r"\n{3,}")


def normalise(text: str) -> str:
    """NFC, runs of spaces/tabs to one space, at most one blank line, no surrounding whitespace."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n")
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _NEWLINES.sub("\n\n", text).strip()


@dataclass
class PackStats:
    documents_read: int = 0
    documents_kept: int = 0
    dropped_empty: int = 0
    dropped_too_short: int = 0
    dropped_too_long: int = 0
    tokens: int = 0  # tokens of kept documents, BOS/EOS included
    tokens_in_blocks: int = 0  # real (non-padding) tokens that ended up in blocks
    tokens_dropped_tail: int = 0  # concat packing: the last partial block
    padding_tokens: int = 0
    blocks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class _ShardWriter:
    """Collects blocks and writes them as Parquet shards of BLOCKS_PER_SHARD."""

    def __init__(self, out_dir: Path, block_size: int):
        self.out_dir, self.block_size = out_dir, block_size
        self.rows: list[tuple[np.ndarray, int, int, int]] = []
        self.shards = 0
        out_dir.mkdir(parents=True, exist_ok=True)

    def add(self, ids: np.ndarray, n_real: int, first_doc: int, last_doc: int) -> None:
        self.rows.append((ids, n_real, first_doc, last_doc))
        if len(self.rows) >= BLOCKS_PER_SHARD:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        flat = pa.array(np.concatenate([r[0] for r in self.rows]).astype(np.int32))
        table = pa.table({
            "input_ids": pa.FixedSizeListArray.from_arrays(flat, self.block_size),
            "n_real": pa.array([r[1] for r in self.rows], pa.int32()),
            "first_doc": pa.array([r[2] for r in self.rows], pa.int64()),
            "last_doc": pa.array([r[3] for r in self.rows], pa.int64()),
        })
        pq.write_table(table, self.out_dir / f"blocks-{self.shards:05d}.parquet")
        self.shards += 1
        self.rows = []


def _token_lists(texts: Iterable[str], tokenizer) -> Iterator[list[int]]:
    """Tokenize in batches (the fast tokenizer parallelises a batch); BOS if the tokenizer adds it, then EOS."""
    batch: list[str] = []
    eos = tokenizer.eos_token_id
    for text in texts:
        batch.append(text)
        if len(batch) == _TOKENIZE_BATCH:
            check_stop("tokenizing a corpus")
            yield from (ids + [eos] for ids in tokenizer(batch, add_special_tokens=True)["input_ids"])
            batch = []
    if batch:
        yield from (ids + [eos] for ids in tokenizer(batch, add_special_tokens=True)["input_ids"])


def pack_corpus(documents: Iterable[str], tokenizer, out_dir: Path, prep: CorpusPrepConfig, source: str = "corpus",
                progress: Progress | None = None) -> PackStats:
    """Normalise, filter, tokenize and pack `documents` into `out_dir`. Raises InputError on an empty corpus."""
    if tokenizer.eos_token_id is None:
        raise InputError(f"tokenizer for {source} has no EOS token; packing needs one to separate documents")
    block_size, packing, min_chars, max_chars = prep.block_size, prep.packing, prep.min_chars, prep.max_chars
    stats = PackStats()
    writer = _ShardWriter(out_dir, block_size)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def kept_texts() -> Iterator[str]:
        for raw in documents:
            stats.documents_read += 1
            text = normalise(raw)
            if not text:
                stats.dropped_empty += 1
            elif len(text) < min_chars:
                stats.dropped_too_short += 1
            elif len(text) > max_chars:
                stats.dropped_too_long += 1
            else:
                yield text

    buffer: list[int] = []
    buffer_docs: list[int] = []  # document index of each token in buffer (concat packing)
    for doc_index, ids in enumerate(_token_lists(kept_texts(), tokenizer)):
        stats.documents_kept += 1
        stats.tokens += len(ids)
        if packing == "document":
            for start in range(0, len(ids), block_size):
                chunk = ids[start:start + block_size]
                padded = np.full(block_size, pad, dtype=np.int64)
                padded[:len(chunk)] = chunk
                writer.add(padded, len(chunk), doc_index, doc_index)
                stats.padding_tokens += block_size - len(chunk)
                stats.tokens_in_blocks += len(chunk)
                stats.blocks += 1
        else:
            buffer += ids
            buffer_docs += [doc_index] * len(ids)
            while len(buffer) >= block_size:
                writer.add(np.asarray(buffer[:block_size]), block_size, buffer_docs[0], buffer_docs[block_size - 1])
                stats.tokens_in_blocks += block_size
                stats.blocks += 1
                del buffer[:block_size], buffer_docs[:block_size]
        if progress is not None and stats.documents_kept % 5000 == 0:
            progress(stats.documents_kept, 0, {"tokens": stats.tokens, "blocks": stats.blocks})
    stats.tokens_dropped_tail = len(buffer)
    writer.flush()
    if stats.blocks == 0:
        raise InputError(
            f"corpus {source} is empty after filtering: {stats.documents_read} documents read, "
            f"{stats.dropped_empty} empty, {stats.dropped_too_short} too short, {stats.dropped_too_long} too long, "
            f"{stats.tokens} tokens kept (a block needs {block_size})"
        )
    return stats


def mix_corpora(parts: dict[str, Path], weights: dict[str, float], out_dir: Path, seed: int) -> dict[str, int]:
    """A mixture of packed corpora by token share: as many blocks of each part as its weight allows,
    the smallest part limiting the total, shuffled together with `seed`. Returns blocks taken per part."""
    tables = {name: pa.concat_tables([pq.read_table(f) for f in sorted(Path(d).glob("blocks-*.parquet"))])
              for name, d in parts.items()}
    active = {n: w for n, w in weights.items() if w > 0}
    if not active:
        raise InputError("corpus mixture: every weight is zero")
    total = min(len(tables[n]) / w for n, w in active.items())  # blocks we can afford before a part runs out
    rng = np.random.default_rng(seed)
    taken, pieces = {}, []
    for name, w in active.items():
        count = max(1, int(total * w))
        picks = np.sort(rng.choice(len(tables[name]), size=count, replace=False))
        pieces.append(tables[name].take(pa.array(picks)))
        taken[name] = count
    mixed = pa.concat_tables(pieces)
    mixed = mixed.take(pa.array(rng.permutation(len(mixed))))
    out_dir.mkdir(parents=True, exist_ok=True)
    for shard, start in enumerate(range(0, len(mixed), BLOCKS_PER_SHARD)):
        pq.write_table(mixed.slice(start, BLOCKS_PER_SHARD), out_dir / f"blocks-{shard:05d}.parquet")
    return taken


def write_stats(stats: PackStats, out_dir: Path, **extra: Any) -> dict[str, Any]:
    body = {k: v for k, v in stats.__dict__.items() if k != "extra"} | stats.extra | extra
    (out_dir / "stats.json").write_text(json.dumps(body, indent=2))
    return body
