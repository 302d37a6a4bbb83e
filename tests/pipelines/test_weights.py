"""The streaming weight I/O: what the shard writer streams from a precomputed header is what the safetensors
library reads (every dtype, scalars, empty tensors, shards split by size), and the reader reads the library's
files back exactly, without a memory map; the O_DIRECT file the writer streams into holds exactly what it was
given."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from linguaforge.pipelines.direct_file import DirectFile
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.weights import INDEX_NAME, ShardedWriter, WeightReader

TENSORS = {
    "a.weight": torch.randn(7, 5),
    "b.bf16": torch.randn(3, 4).to(torch.bfloat16),
    "c.half": torch.randn(9).half(),
    "d.index": torch.arange(6, dtype=torch.int64).view(2, 3),
    "e.mask": torch.tensor([True, False, True]),
    "f.scalar": torch.tensor(2.5),
    "g.empty": torch.zeros(0, 4),
    "h.big": torch.randn(64, 64),
}


@pytest.mark.parametrize("shard_bytes", [10**9, 200])
def test_streamed_shards_read_back_with_the_safetensors_library(tmp_path, shard_bytes):
    layout = [(n, t.dtype, tuple(t.shape)) for n, t in TENSORS.items()]
    writer = ShardedWriter(tmp_path, shard_bytes, layout=layout)
    for name, tensor in TENSORS.items():
        writer.add(name, tensor)
    files = writer.close()
    assert (len(files) > 1) == (shard_bytes == 200) and (tmp_path / INDEX_NAME).exists() == (len(files) > 1)
    seen = {}
    for file in files:
        with safe_open(str(tmp_path / file), framework="pt") as f:  # the library's own reader
            seen |= {k: f.get_tensor(k) for k in f.keys()}
    assert seen.keys() == TENSORS.keys()
    for name, tensor in TENSORS.items():
        assert seen[name].dtype == tensor.dtype and torch.equal(seen[name], tensor), name
    reader = WeightReader(tmp_path)
    assert all(torch.equal(reader.get(n), t) for n, t in TENSORS.items())
    if len(files) > 1:
        index = json.loads((tmp_path / INDEX_NAME).read_text())
        assert set(index["weight_map"]) == set(TENSORS)


def test_the_writer_refuses_what_its_layout_does_not_say(tmp_path):
    writer = ShardedWriter(tmp_path, 10**9, layout=[("x", torch.float32, (2,)), ("y", torch.float32, (2,))])
    with pytest.raises(RuntimeError, match="the layout says"):
        writer.add("x", torch.zeros(3))
    writer = ShardedWriter(tmp_path / "two", 10**9, layout=[("x", torch.float32, (2,)), ("y", torch.float32, (2,))])
    writer.add("x", torch.zeros(2))
    with pytest.raises(RuntimeError, match="before every tensor"):
        writer.close()


def test_the_reader_reads_library_files_and_refuses_truncated_ones(tmp_path):
    save_file({n: t.contiguous() for n, t in TENSORS.items()}, str(tmp_path / "model.safetensors"))
    reader = WeightReader(tmp_path)
    assert reader.names() and all(torch.equal(reader.get(n), t) for n, t in TENSORS.items())
    assert reader.dtype("b.bf16") == "BF16" and reader.shape("a.weight") == (7, 5)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "model.safetensors").write_bytes(data[:-200])
    with pytest.raises(InputError, match="truncated"):
        WeightReader(tmp_path / "cut").get("h.big")


@pytest.mark.parametrize("direct", [True, False])
def test_a_direct_file_holds_exactly_the_bytes_written(tmp_path, direct):
    """Writes of every size around the block and buffer sizes (an 8 KB buffer, 4 KB blocks): the file holds
    the bytes in order and has their length, padding cut, whether O_DIRECT is used or not."""
    rng = random.Random(0)
    pieces = [bytes(rng.getrandbits(8) for _ in range(n)) for n in (8, 4088, 1, 4096, 8192, 12_289, 0, 7, 5000)]
    f = DirectFile(tmp_path / "out.bin", direct=direct, buffer_bytes=8192)
    for piece in pieces:
        f.write(memoryview(piece))
    f.close()
    assert (tmp_path / "out.bin").read_bytes() == b"".join(pieces)
    f = DirectFile(tmp_path / "empty.bin", direct=direct, buffer_bytes=8192)
    f.close()
    assert (tmp_path / "empty.bin").read_bytes() == b""
