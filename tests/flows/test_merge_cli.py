"""`linguaforge merge CONFIG` as a user runs it: a real subprocess, deltas read from a real S3 endpoint,
the output loads with transformers; bad configs and foreign deltas fail clearly with no output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from linguaforge.pipelines.merging.deltas import base_weights_digest, write_sparse_delta
from linguaforge.pipelines.weights import WeightReader


def _delta(path: Path, base_dir: Path, seed: int, digest: str | None = None) -> Path:
    g = torch.Generator().manual_seed(seed)
    base = WeightReader(base_dir)
    triples = []
    for n in base.names():
        t = base.get(n)
        rows = (torch.rand(t.shape[0], generator=g) < 0.1).view(-1, *([1] * (t.ndim - 1)))
        triples.append((n, t, t + torch.randn(t.shape, generator=g) * 0.01 * rows))
    write_sparse_delta(path, triples, "tiny", digest or base_weights_digest(base_dir))
    return path


def _cli(*args, cwd):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "linguaforge.flows.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_merge_command_reads_s3_deltas_and_writes_a_loadable_model(demo_assets, s3_bucket, tmp_path, repo_root):
    import s3fs

    llm = demo_assets["llm"]
    fs = s3fs.S3FileSystem()
    urls = {}
    for seed, name in enumerate(["ability_pivot", "pivot", "de", "sw"]):
        local = _delta(tmp_path / f"{name}.safetensors", llm, seed)
        fs.put_file(str(local), f"{s3_bucket}/deltas/{name}.safetensors")
        urls[name] = f"s3://{s3_bucket}/deltas/{name}.safetensors"
    config = {"base": str(llm), "out": str(tmp_path / "merged"), "cache_dir": str(tmp_path / "cache"),
              "deltas": {"ability_pivot": urls["ability_pivot"], "pivot": urls["pivot"],
                         "languages": {"de": urls["de"], "sw": urls["sw"]}},
              "merge": {"k2_percent": 50}}
    (tmp_path / "merge.yaml").write_text(yaml.safe_dump(config))
    result = _cli("merge", str(tmp_path / "merge.yaml"), cwd=repo_root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tensors get γR(A) (k2 = 50.0 %)" in result.stdout and "q_proj" in result.stdout

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert model.generate(torch.tensor([[1, 4, 2]]), max_new_tokens=3, do_sample=False).shape == (1, 6)


def test_merge_command_bad_inputs(demo_assets, tmp_path, repo_root):
    llm = demo_assets["llm"]
    good = str(_delta(tmp_path / "good.safetensors", llm, 0))
    foreign = str(_delta(tmp_path / "foreign.safetensors", llm, 1, digest="f" * 64))
    base = {"base": str(llm), "out": str(tmp_path / "merged"), "cache_dir": str(tmp_path / "cache"),
            "deltas": {"ability_pivot": good, "pivot": good, "languages": {"sw": foreign}}}
    (tmp_path / "foreign.yaml").write_text(yaml.safe_dump(base))
    result = _cli("merge", str(tmp_path / "foreign.yaml"), cwd=repo_root)
    assert result.returncode == 1 and "was made against another base model" in result.stderr
    assert not (tmp_path / "merged").exists()

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(base | {"merge": {"k2_percent": 150, "method": "magic"}}))
    result = _cli("merge", str(tmp_path / "bad.yaml"), cwd=repo_root)
    assert result.returncode == 2
    assert "merge.k2_percent: Input should be less than or equal to 100" in result.stderr
    assert "merge.method: Input should be" in result.stderr
