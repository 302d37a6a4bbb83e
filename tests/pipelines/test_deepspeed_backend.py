"""The DeepSpeed back end on CPU (gloo): every ZeRO stage matches plain torch, two processes match one,
kill-and-resume is bit-identical, and a config that does not parse is a clear error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from linguaforge.pipelines.corpus import pack_corpus
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.models import load_causal_lm, load_tokenizer
from linguaforge.pipelines.settings import CorpusPrepConfig
from linguaforge.pipelines.training.causal_lm import CausalLMRecipe, PackedBlocks
from linguaforge.pipelines.training.cpt import make_backend
from linguaforge.pipelines.training.loop import train
from linguaforge.pipelines.training.settings import TrainSettings
from linguaforge.storage import ArtifactStore


@pytest.fixture(scope="module")
def blocks_dir(demo_assets, tmp_path_factory):
    folder = tmp_path_factory.mktemp("blocks")
    text = (demo_assets["world"] / "translation" / "zh" / "train.en").read_text().splitlines()
    pack_corpus(text * 3, load_tokenizer(str(demo_assets["llm"])), folder, CorpusPrepConfig(block_size=32))
    return folder


BASE = dict(learning_rate=3e-3, batch_tokens=512, micro_batch_size=4, warmup_steps=1)


def test_every_zero_stage_matches_plain_torch(demo_assets, blocks_dir):
    data = PackedBlocks.from_dir(blocks_dir)
    reference = train(make_backend(load_causal_lm(str(demo_assets["llm"])), TrainSettings(steps=3, **BASE), 32),
                      CausalLMRecipe(data, TrainSettings(steps=3, **BASE)))
    for stage in range(4):
        s = TrainSettings(steps=3, backend="deepspeed", deepspeed_config=f"deploy/deepspeed/zero{stage}.json", **BASE)
        result = train(make_backend(load_causal_lm(str(demo_assets["llm"])), s, 32), CausalLMRecipe(data, s))
        assert result.losses == pytest.approx(reference.losses, rel=1e-5), f"ZeRO-{stage}"


def test_unparseable_config(tmp_path, demo_assets):
    (tmp_path / "ds.json").write_text('{"zero_optimization": {"stage": 2,}')
    s = TrainSettings(backend="deepspeed", deepspeed_config=str(tmp_path / "ds.json"))
    with pytest.raises(InputError, match=r"DeepSpeed config .*ds.json: not valid JSON \(.* at line 1\)"):
        make_backend(load_causal_lm(str(demo_assets["llm"])), s, 32)


def _worker(args, repo_root, nproc=1, **popen):
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    launcher = [sys.executable, "-m", "linguaforge.pipelines.training.cpt_worker"]
    if nproc > 1:
        from tests.conftest import free_port

        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                    f"--master_port={free_port()}", "-m", "linguaforge.pipelines.training.cpt_worker"]
    return subprocess.Popen([*launcher, *args], cwd=repo_root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def test_two_processes_match_one(tmp_path, demo_assets, blocks_dir, repo_root):
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"steps": 3, "backend": "deepspeed",
                                    "deepspeed_config": "deploy/deepspeed/zero2.json", **BASE}))
    outs = {}
    for nproc in (1, 2):
        out = tmp_path / f"out{nproc}"
        proc = _worker(["--model", str(demo_assets["llm"]), "--blocks", str(blocks_dir), "--settings",
                        str(settings), "--out", str(out)], repo_root, nproc)
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, log[-3000:]
        outs[nproc] = (load_file(out / "weights.safetensors"), json.loads((out / "train.json").read_text()))
    assert outs[2][1]["losses"] == pytest.approx(outs[1][1]["losses"], rel=1e-5)
    for name, tensor in outs[1][0].items():
        assert torch.allclose(tensor, outs[2][0][name], atol=1e-5), name


@pytest.mark.parametrize("backend", ["torch", "deepspeed"])
def test_sigkill_and_resume_is_bit_identical(tmp_path, demo_assets, blocks_dir, repo_root, backend):
    steps = 40
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"steps": steps, "checkpoint_every": 4, "backend": backend,
                                    "deepspeed_config": "deploy/deepspeed/zero1.json", **BASE}))
    common = ["--model", str(demo_assets["llm"]), "--blocks", str(blocks_dir), "--settings", str(settings)]
    straight = _worker([*common, "--out", str(tmp_path / "straight")], repo_root)
    assert straight.wait(timeout=300) == 0, straight.stdout.read()[-3000:]

    store = ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "cache")
    area = store.checkpoints("cpt", "k" * 24)
    resumable = [*common, "--out", str(tmp_path / "resumed"), "--store", store.url, "--kind", "cpt", "--key", "k" * 24]
    victim = _worker(resumable, repo_root)
    deadline = time.monotonic() + 240
    while not area.steps() or area.steps()[0] < 8:  # let it get past two checkpoints, then kill it mid-run
        assert victim.poll() is None, "the training process ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    killed_at = area.steps()[0]
    assert killed_at < steps

    again = _worker(resumable, repo_root)
    assert again.wait(timeout=300) == 0, again.stdout.read()[-3000:]
    summary = json.loads((tmp_path / "resumed" / "train.json").read_text())
    assert summary["resumed_from"] >= 8
    reference = json.loads((tmp_path / "straight" / "train.json").read_text())
    assert summary["losses"] == reference["losses"]
    a = load_file(tmp_path / "straight" / "weights.safetensors")
    b = load_file(tmp_path / "resumed" / "weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
