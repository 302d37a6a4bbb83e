"""Streaming access to HF safetensors model folders: read one tensor at a time, write shards as you go.

Memory stays bounded by the tensors in hand, never the whole model. Tensors are read with plain positioned
reads, not through a memory map: the pages of a mapped file count as the process's memory for as long as it
stays mapped, so a merge that reads three 2 GB models through maps holds 6 GB of resident pages; read into
owned buffers it holds the tensors it works on. Writing, a shard's header is computed from the tensors it
will hold (names, dtypes and shapes are known before any value is), so each tensor goes to disk as soon as
it is made, instead of a whole shard waiting in memory, and around the page cache (`DirectFile`, O_DIRECT).
Both speak the safetensors format as its library writes it (header length, JSON header, contiguous data) and
the library reads what they write.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from linguaforge.pipelines.direct_file import DirectFile
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.locations import check_not_pickle_only
from linguaforge.pipelines.settings import DTYPE_NAMES as SETTING_DTYPES

INDEX_NAME = "model.safetensors.index.json"
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}  # safetensors' codes
TORCH_DTYPES = {name: getattr(torch, name) for name in SETTING_DTYPES}  # a setting's dtype name → torch's dtype
READ_AHEAD_BYTES = 64 << 20  # a reader reads ahead at most this much (memory held for the next tensor)
_READS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="weights-read")  # positioned reads release the GIL


class SafetensorsFile:
    """One safetensors file: its header parsed once, each tensor read into a buffer of its own on request."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                length = int.from_bytes(f.read(8), "little")
                if length > size - 8:
                    raise ValueError(f"header of {length} bytes in a file of {size}")
                header = json.loads(f.read(length))
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"weights {self.path}: not a readable safetensors file ({exc})") from None
        self.metadata: dict[str, str] = header.pop("__metadata__", {}) or {}
        self.entries: dict[str, dict] = header
        self.data_start = 8 + length
        for name, entry in header.items():
            if problem := _entry_problem(entry, size - self.data_start):
                raise InputError(f"weights {self.path}: tensor {name!r}: {problem} (a damaged or hand-edited file)")

    def read(self, name: str) -> torch.Tensor:
        entry = self.entries[name]
        start, end = entry["data_offsets"]
        buffer = torch.empty(end - start, dtype=torch.uint8)
        self._pread(name, start, buffer)
        return buffer.view(DTYPES[entry["dtype"]]).reshape(entry["shape"])

    def read_into(self, name: str, first: int, out: torch.Tensor) -> None:
        """Entries first .. first + out.numel() - 1 of the flattened tensor into `out` (contiguous, its dtype)."""
        entry = self.entries[name]
        self._pread(name, entry["data_offsets"][0] + first * out.element_size(), out.view(-1).view(torch.uint8))

    def _pread(self, name: str, offset: int, buffer: torch.Tensor) -> None:
        """`buffer.numel()` bytes from `offset` into the data part."""
        view, done = memoryview(buffer.numpy()), 0
        with open(self.path, "rb", buffering=0) as f:
            fd = f.fileno()
            while done < len(view):  # one read returns at most ~2 GiB
                got = os.preadv(fd, [view[done:]], self.data_start + offset + done)
                if got == 0:
                    raise InputError(f"weights {self.path}: truncated in tensor {name}")
                done += got


def _entry_problem(entry, data_bytes: int) -> str | None:
    """What is wrong with one header entry, or None: the dtype is known, the shape is whole numbers, and the byte
    range lies in the file and holds exactly shape × dtype size bytes (else a read would take another tensor's)."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        return "the header entry lacks dtype, shape or data_offsets"
    if entry["dtype"] not in DTYPES:
        return f"dtype {entry['dtype']!r} is not supported"
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return f"shape {shape!r} is not a list of sizes"
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_bytes):
        return f"data_offsets {offsets!r} lie outside the file's {data_bytes} data bytes (truncated?)"
    expected = math.prod(shape) * torch.empty(0, dtype=DTYPES[entry["dtype"]]).element_size()
    if offsets[1] - offsets[0] != expected:
        return f"{offsets[1] - offsets[0]} bytes for a {entry['dtype']} tensor of shape {shape} ({expected} bytes)"
    return None


def _weight_map(index: Path) -> dict[str, str]:
    """The index's tensor → shard file map, every way it can be malformed named."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"weights index {index}: not readable JSON ({exc})") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str) and "/" not in v
                                                   and v.endswith(".safetensors") for k, v in weight_map.items()):
        raise InputError(f"weights index {index}: `weight_map` must map tensor names to .safetensors files in the "
                         "same folder")
    if missing := sorted({f for f in weight_map.values() if not (index.parent / f).is_file()}):
        raise InputError(f"weights index {index}: names {missing[0]}, which is not in the folder")
    return weight_map


class WeightReader:
    """Tensor-by-tensor reader over a single-file or sharded safetensors model folder."""

    def __init__(self, model_dir: str | Path):
        self.dir = Path(model_dir)
        index = self.dir / INDEX_NAME
        if index.exists():
            weight_map = _weight_map(index)
        else:
            files = sorted(self.dir.glob("*.safetensors"))
            if not files:
                check_not_pickle_only(str(self.dir), "model")
                raise InputError(f"model {self.dir}: no .safetensors weights (an HF save_pretrained folder is expected)")
            weight_map = {name: f.name for f in files for name in SafetensorsFile(f).entries}
        self.weight_map: dict[str, str] = weight_map
        self._files: dict[str, SafetensorsFile] = {}
        self._float: tuple[str, torch.Tensor] | None = None
        self._ahead: dict[str, Future] = {}
        self._last: tuple[str, torch.Tensor] | None = None  # the last tensor `get` returned (for float32)
        self._scratch: dict[torch.dtype, torch.Tensor] = {}  # float32_slice's buffers, reused slice after slice

    def _file(self, name: str) -> SafetensorsFile:
        try:
            file = self.weight_map[name]
        except KeyError:
            raise InputError(f"model {self.dir}: no tensor {name!r}") from None
        if file not in self._files:
            self._files[file] = SafetensorsFile(self.dir / file)
        return self._files[file]

    def names(self) -> list[str]:
        return list(self.weight_map)

    def get(self, name: str) -> torch.Tensor:
        ahead = self._ahead.pop(name, None)
        tensor = ahead.result() if ahead is not None else self._file(name).read(name)
        self._last = (name, tensor)
        return tensor

    def prefetch(self, name: str) -> None:
        """Start reading `name` in a background thread, so that a streaming merge reads the next tensor while it
        computes this one; the next `get(name)` takes it. Only tensors up to READ_AHEAD_BYTES, and one at a time
        (memory stays a few tensors)."""
        entry = self._file(name).entries[name]
        start, end = entry["data_offsets"]
        if name not in self._ahead and not self._ahead and end - start <= READ_AHEAD_BYTES:
            self._ahead[name] = _READS.submit(self._file(name).read, name)

    def float32(self, name: str) -> torch.Tensor:
        """The tensor in float32, kept for the next call with the same name (several deltas taken against one
        base tensor read and convert it once), made from the last `get` when that was this tensor (a merge reads
        each base tensor once). Callers must not modify it (nor, for a float32 model, what `get` returned)."""
        if self._float is None or self._float[0] != name:
            self._float = None  # drop the previous tensor before making the next
            raw = self._last[1] if self._last is not None and self._last[0] == name else self.get(name)
            self._float = (name, raw.to(torch.float32))
        return self._float[1]

    def float32_slice(self, name: str, first: int, count: int) -> torch.Tensor:
        """Entries first .. first + count - 1 of the flattened tensor, in float32, in a buffer this reader reuses:
        valid until its next call. Slice after slice, no memory is allocated (on a VM, fresh pages cost more than
        the arithmetic done in them) and a slice stays in the CPU's cache while it is worked on."""
        stored = DTYPES[self.dtype(name)]
        raw = self._buffer(stored, count)
        self._file(name).read_into(name, first, raw)
        return raw if stored == torch.float32 else self._buffer(torch.float32, count).copy_(raw)

    def _buffer(self, dtype: torch.dtype, count: int) -> torch.Tensor:
        if dtype not in self._scratch or self._scratch[dtype].numel() < count:
            self._scratch[dtype] = torch.empty(count, dtype=dtype)
        return self._scratch[dtype][:count]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._file(name).entries[name]["shape"])

    def dtype(self, name: str) -> str:
        return self._file(name).entries[name]["dtype"]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: self.shape(n) for n in self.names()}


def copy_non_weight_files(src: str | Path, dst: str | Path) -> None:
    """config.json, generation_config.json, tokenizer files...: everything but the weights and their index."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        if path.is_file() and path.suffix != ".safetensors" and path.name != INDEX_NAME and not path.name.startswith("."):
            shutil.copy2(path, dst / path.name)


class ShardedWriter:
    """Writes tensors into HF-style shards of at most `shard_bytes` (a tensor larger than that gets a shard of its
    own). With the `layout` (name, dtype, shape of every tensor, in the order they will come) each tensor is
    written as it arrives; without it, a shard is kept in memory until it fills."""

    def __init__(self, out_dir: str | Path, shard_bytes: int = 2 * 1024**3,
                 layout: list[tuple[str, torch.dtype, tuple[int, ...]]] | None = None):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shard_bytes = shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[list[str]] = []
        self.total_bytes = 0
        self._layout = None if layout is None else _plan_shards(layout, shard_bytes)
        self._expected = iter([]) if layout is None else iter(layout)
        self._open: tuple[int, object] | None = None  # (shard index, file) being streamed
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-write")  # in order, one at a time
        self._pending_writes: list[Future] = []

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        self.total_bytes += size
        if self._layout is not None:
            self._stream(name, tensor)
            return
        if self._pending and self._pending_bytes + size > self.shard_bytes:
            self._flush()
        self._pending[name] = tensor.contiguous()
        self._pending_bytes += size

    def _stream(self, name: str, tensor: torch.Tensor) -> None:
        expected = next(self._expected, None)
        if expected is None or expected[0] != name or expected[1] != tensor.dtype or tuple(expected[2]) != tuple(tensor.shape):
            raise RuntimeError(f"shard writer: got {name} {tensor.dtype} {tuple(tensor.shape)}, the layout says {expected}")
        shard = next(i for i, names in enumerate(self._layout) if name in names)
        data = tensor.contiguous().reshape(-1).view(torch.uint8)
        # written by one background thread, in order, while the caller makes the next tensor; at most two wait
        self._pending_writes.append(self._writes.submit(self._write, shard, data))
        while len(self._pending_writes) > 2:
            self._pending_writes.pop(0).result()

    def _write(self, shard: int, data: torch.Tensor) -> None:
        if self._open is None or self._open[0] != shard:
            self._close_open()
            f = DirectFile(self.dir / f".shard-{shard:05d}.safetensors")
            f.write(memoryview(_header(self._layout[shard])))
            self._open = (shard, f)
            self._shards.append(list(self._layout[shard]))
        self._open[1].write(memoryview(data.numpy()))

    def _close_open(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def _drain(self) -> None:
        """Wait for every queued write (raising the first failure), then close the open shard."""
        try:
            while self._pending_writes:
                self._pending_writes.pop(0).result()
        finally:
            self._writes.submit(self._close_open).result()
            self._writes.shutdown()

    def _flush(self) -> None:
        from safetensors.torch import save_file

        save_file(self._pending, str(self.dir / f".shard-{len(self._shards):05d}.safetensors"), metadata={"format": "pt"})
        self._shards.append(list(self._pending))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> list[str]:
        """Name the shards as transformers expects and write the index; returns the file names."""
        if self._layout is not None:
            self._drain()
            if next(self._expected, None) is not None:
                raise RuntimeError("shard writer: closed before every tensor of the layout was written")
        elif self._pending:
            self._flush()
        n = len(self._shards)
        names = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        weight_map = {}
        for i, (tensors, final) in enumerate(zip(self._shards, names, strict=True)):
            os.replace(self.dir / f".shard-{i:05d}.safetensors", self.dir / final)
            weight_map |= dict.fromkeys(tensors, final)
        if n > 1:
            (self.dir / INDEX_NAME).write_text(json.dumps(
                {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}, indent=2))
        return names


def _plan_shards(layout, shard_bytes: int) -> list[dict[str, tuple[torch.dtype, tuple[int, ...]]]]:
    """Group the tensors, in order, into shards of at most `shard_bytes` (as the in-memory writer does)."""
    shards: list[dict] = [{}]
    filled = 0
    for name, dtype, shape in layout:
        size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        if shards[-1] and filled + size > shard_bytes:
            shards.append({})
            filled = 0
        shards[-1][name] = (dtype, tuple(shape))
        filled += size
    return shards


def _header(tensors: dict[str, tuple[torch.dtype, tuple[int, ...]]]) -> bytes:
    """The safetensors header of a shard holding `tensors` in this order, padded to 8 bytes as the library does."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text
