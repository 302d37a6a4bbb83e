"""MindMerger training on the demo world's tiny models: only the mapping and the boundary move; dev
perplexity falls in both stages (augmentation initialised from the mapping stage's best checkpoint);
a training process killed with SIGKILL and resumed ends with bit-identical weights; DeepSpeed agrees
with plain torch."""

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

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.mindmerger.checkpoint import read_meta
from linguaforge.pipelines.mindmerger.data import save_examples, split_dev
from linguaforge.pipelines.mindmerger.train import (
    ModelPair,
    StageSettings,
    mapping_backend,
    run_stage_training,
    train_stage,
    use_encoder_cache,
)
from linguaforge.storage import ArtifactStore
from tests.pipelines import mindmerger_common as mm
from tests.pipelines.mindmerger_common import one_torch_thread  # noqa: F401  (autouse fixture)

FAST = dict(learning_rate=1e-2, global_batch_size=16, micro_batch_size=8, epochs=2.0)


def test_only_mapping_and_boundary_change(demo_assets):
    model = mm.model(demo_assets)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train, dev = split_dev(mm.mapping_examples(demo_assets, 8), 0.2, 0)
    settings = StageSettings(stage="mapping", **FAST | {"epochs": 1.0})
    train_stage(mapping_backend(model, settings, settings.steps(len(train))), train, dev, settings)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"mapping.mlp.linear1.weight", "mapping.mlp.linear1.bias", "mapping.mlp.linear2.weight",
                       "mapping.mlp.linear2.bias", "mapping.end_boundary"}


def test_dev_perplexity_falls_in_both_stages(demo_assets, tmp_path):
    mapping_train, mapping_dev = split_dev(mm.mapping_examples(demo_assets, 40), 0.1, 0)
    pair = ModelPair(str(demo_assets["encoder"]), str(demo_assets["llm"]))
    first = run_stage_training(pair, mapping_train, mapping_dev,
                               StageSettings(stage="mapping", **FAST), tmp_path / "mapping")
    assert first.dev_ppl[first.steps] < 0.95 * first.dev_ppl[0], first.dev_ppl
    best = read_meta(tmp_path / "mapping" / "best")
    assert (best.stage, best.step, best.d_enc, best.d_llm) == ("mapping", first.best_step, 32, 32)
    assert best.encoder == str(demo_assets["encoder"]) and best.dev_ppl == first.best_ppl
    assert (tmp_path / "mapping" / "best" / "pytorch_model.bin").is_file()
    assert read_meta(tmp_path / "mapping" / "last").step == first.steps

    aug_train, aug_dev = split_dev(mm.augmentation_examples(demo_assets, per_language=30), 0.1, 0)
    second = run_stage_training(pair, aug_train, aug_dev,
                                StageSettings(stage="augmentation", **FAST), tmp_path / "augmentation",
                                init=tmp_path / "mapping" / "best")
    assert second.dev_ppl[second.steps] < 0.99 * second.dev_ppl[0], second.dev_ppl
    assert read_meta(tmp_path / "augmentation" / "best").stage == "augmentation"


def test_too_few_examples_for_a_micro_batch(demo_assets):
    model = mm.model(demo_assets)
    examples = mm.mapping_examples(demo_assets, 1)
    settings = StageSettings(micro_batch_size=8, global_batch_size=8)
    with pytest.raises(InputError, match=r"3 training examples, fewer than one micro-batch \(8\)"):
        train_stage(mapping_backend(model, settings, 1), examples[:3], examples[3:], settings)


def test_encoder_cache_only_within_its_memory_budget(demo_assets):
    model, examples = mm.model(demo_assets), mm.mapping_examples(demo_assets, 5)
    assert use_encoder_cache(model, examples, StageSettings())
    assert not use_encoder_cache(model, examples, StageSettings(encoder_cache_max_gb=1e-6))
    assert not use_encoder_cache(model, examples, StageSettings(cache_encoder_states=False))


def _worker(args, repo_root):
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return subprocess.Popen([sys.executable, "-m", "linguaforge.pipelines.mindmerger.train", *args], cwd=repo_root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_and_resume_is_bit_identical(tmp_path, demo_assets, repo_root):
    train, dev = split_dev(mm.mapping_examples(demo_assets, 15), 0.1, 0)
    save_examples(train, tmp_path / "train.parquet")
    save_examples(dev, tmp_path / "dev.parquet")
    steps = 24
    settings = StageSettings(stage="mapping", learning_rate=3e-3, global_batch_size=8, micro_batch_size=4,
                             epochs=steps * 8 / len(train), checkpoint_every=3, eval_every=5)
    assert settings.steps(len(train)) == steps
    (tmp_path / "s.json").write_text(json.dumps(settings.__dict__))
    common = ["--encoder", str(demo_assets["encoder"]), "--llm", str(demo_assets["llm"]), "--train",
              str(tmp_path / "train.parquet"), "--dev", str(tmp_path / "dev.parquet"), "--settings",
              str(tmp_path / "s.json")]
    store = ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "cache")
    area = store.checkpoints("mindmerger", "k" * 24)
    resumable = [*common, "--out", str(tmp_path / "resumed"), "--store", store.url, "--kind", "mindmerger",
                 "--key", "k" * 24]
    straight = _worker([*common, "--out", str(tmp_path / "straight")], repo_root)  # runs alongside the victim
    victim = _worker(resumable, repo_root)
    deadline = time.monotonic() + 240
    while not area.steps() or area.steps()[0] < 6:  # past two checkpoints, then kill it mid-run
        assert victim.poll() is None, victim.stdout.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert area.steps()[0] < steps

    again = _worker(resumable, repo_root)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out[-3000:]
    assert straight.wait(timeout=300) == 0, straight.stdout.read()[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["resumed_from"] >= 6
    resumed = json.loads((tmp_path / "resumed" / "train.json").read_text())
    reference = json.loads((tmp_path / "straight" / "train.json").read_text())
    assert resumed["losses"] == reference["losses"] and resumed["dev_ppl"] == reference["dev_ppl"]
    # what a resumed run writes is what an uninterrupted one writes, byte for byte
    assert (tmp_path / "resumed" / "train.json").read_bytes() == (tmp_path / "straight" / "train.json").read_bytes()
    for which in ("last", "best"):
        a = load_file(tmp_path / "straight" / which / "mapping.safetensors")
        b = load_file(tmp_path / "resumed" / which / "mapping.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), which


@pytest.mark.parametrize("zero", [0, 2])
def test_deepspeed_matches_plain_torch(demo_assets, zero, tmp_path):
    train, dev = split_dev(mm.mapping_examples(demo_assets, 6), 0.2, 0)
    common = dict(stage="mapping", learning_rate=3e-3, global_batch_size=8, micro_batch_size=4, epochs=1.0)
    results = {}
    for backend in ("torch", "deepspeed"):
        settings = StageSettings(backend=backend, deepspeed_config=f"deploy/deepspeed/zero{zero}.json", **common)
        model = mm.model(demo_assets)
        engine = mapping_backend(model, settings, settings.steps(len(train)))
        result, _ = train_stage(engine, train, dev, settings)
        results[backend] = result.losses, model.mapping.state_dict()
    # a DeepSpeed checkpoint holds the mapping (and its optimizer state), never the frozen encoder and LLM
    engine.save_state(tmp_path)
    assert not (tmp_path / "model.safetensors").exists()
    fresh = mm.model(demo_assets, seed=5)
    mapping_backend(fresh, settings, settings.steps(len(train))).load_state(tmp_path)
    for k, v in fresh.mapping.state_dict().items():
        assert torch.equal(v.cpu(), results["deepspeed"][1][k].cpu()), k
    assert results["deepspeed"][0] == pytest.approx(results["torch"][0], rel=1e-5)
    for k, v in results["torch"][1].items():
        assert torch.allclose(v, results["deepspeed"][1][k].cpu(), atol=1e-6), k


@pytest.mark.slow
def test_two_processes_under_torchrun_match_one(demo_assets, tmp_path):
    """`processes: 2`: the stage runs as two ranks of this module under torchrun (the launcher CPT uses), forwards
    its progress, writes the artifact folder once, and agrees with one process."""
    train, dev = split_dev(mm.mapping_examples(demo_assets, 8), 0.2, 0)
    common = dict(stage="mapping", learning_rate=3e-3, global_batch_size=8, micro_batch_size=2, epochs=1.0,
                  backend="deepspeed", deepspeed_config="deploy/deepspeed/zero1.json", weight_decay=0.0)
    pair = ModelPair(str(demo_assets["encoder"]), str(demo_assets["llm"]), encoder_id="enc", llm_id="llm")
    one = run_stage_training(pair, train, dev, StageSettings(**common), tmp_path / "one")
    seen = []
    two = run_stage_training(pair, train, dev, StageSettings(**common, processes=2), tmp_path / "two",
                             progress=lambda done, total, metrics: seen.append((done, total)))
    assert seen and seen[-1] == (two.steps, two.steps) and two.steps == one.steps
    assert two.losses == pytest.approx(one.losses, rel=1e-4)
    assert two.dev_ppl.keys() == one.dev_ppl.keys() and two.best_step == one.best_step
    assert read_meta(tmp_path / "two" / "best").encoder == "enc"  # the names the caller gave, not the paths
    a, b = (load_file(tmp_path / w / "best" / "mapping.safetensors") for w in ("one", "two"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_every_configured_field_reaches_a_stage_and_defaults_are_declared_once():
    """MindMergerConfig → StageSettings moves every field a stage reads by name: a change to each lands in the
    stage's settings, and a StageSettings made without the configuration has the configuration's defaults."""
    from linguaforge.pipelines.mindmerger.settings import SHARED_FIELDS, STAGE_FIELDS, MindMergerConfig

    changed = {"learning_rate": 1e-3, "epochs": 1.5, "global_batch_size": 16, "micro_batch_size": 2,
               "checkpoint_every": 7}
    shared = {"adam_betas": (0.7, 0.9), "adam_eps": 1e-6, "weight_decay": 0.1, "grad_clip": 0.5,
              "backend": "deepspeed", "deepspeed_config": "x.json", "gradient_checkpointing": True, "processes": 2}
    assert set(changed) == STAGE_FIELDS and set(shared) == set(SHARED_FIELDS)
    config = MindMergerConfig.model_validate({**shared, "augmentation": changed})
    stage = config.stage_settings("augmentation", "float32", 0, "cpu")
    assert {k: getattr(stage, k) for k in [*changed, *shared]} == {**changed, **shared}
    plain, default = StageSettings(stage="augmentation"), MindMergerConfig().stage_settings("augmentation", "float32", 0)
    assert {k: getattr(plain, k) for k in [*changed, *shared]} == {k: getattr(default, k) for k in [*changed, *shared]}
