"""Data-parallel evaluation: the items shared out over two worker processes give the records of one process, item
for item (`linguaforge eval --devices cpu,cpu` against `--device cpu`; on a GPU node --devices 0,1,...)."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from linguaforge.pipelines.benchmarks.items import BenchmarkItem
from linguaforge.pipelines.generation.causal_lm import HFCausalLMGenerator
from linguaforge.pipelines.generation.parallel import ParallelGenerator

pytestmark = pytest.mark.slow


def _items(n: int) -> list[BenchmarkItem]:
    return [BenchmarkItem(id=str(i), benchmark="xnli", language="de", prompt=f"Satz {i}: " + "es regnet " * (i % 4),
                          source_text="", gold="A", continuations=(" ja", " nein", " vielleicht")) for i in range(n)]


def test_two_workers_give_the_outputs_of_one_process(demo_assets):
    items = _items(9)
    alone = HFCausalLMGenerator.from_pretrained(str(demo_assets["llm"]), device="cpu", batch_size=4)
    with ParallelGenerator(str(demo_assets["llm"]), ["cpu", "cpu"], batch_size=4) as shared:
        assert len(shared.workers) == 2 and all(w.poll() is None for w in shared.workers)
        assert shared.generate(items, 8, ["\n\n"]) == alone.generate(items, 8, ["\n\n"])
        for got, want in zip(shared.option_logprobs(items), alone.option_logprobs(items), strict=True):
            assert got == pytest.approx(want, abs=1e-5)
    assert all(w.poll() is not None for w in shared.workers)  # closed with the block


def test_eval_devices_writes_the_records_of_one_process(demo_assets, tmp_path, repo_root):
    def run(*flags: str, out: str) -> None:
        result = subprocess.run([sys.executable, "-m", "linguaforge.flows.cli", "eval", "--model",
                                 str(demo_assets["llm"]), "--benchmark", "mgsm", "--data",
                                 str(demo_assets["world"] / "bench" / "mgsm"), "--limit", "5", "--max-new-tokens", "8",
                                 "--batch-size", "2", "--out", str(tmp_path / out), *flags], cwd=repo_root,
                                capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    run("--device", "cpu", out="one")
    run("--devices", "cpu,cpu", out="two")
    languages = sorted(p.name for p in (tmp_path / "one" / "mgsm").iterdir())
    assert languages == sorted(p.name for p in (tmp_path / "two" / "mgsm").iterdir()) and len(languages) >= 3
    for language in languages:
        one = pq.read_table(tmp_path / "one" / "mgsm" / language / "records.parquet").to_pylist()
        two = pq.read_table(tmp_path / "two" / "mgsm" / language / "records.parquet").to_pylist()
        assert one == two, language
