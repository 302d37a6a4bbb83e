"""The MindMerger Prefect tasks on a real (ephemeral) Prefect API: mapping then augmentation commit their
artifacts (best/last mappings, official export, data, loss curve), a second run skips both, and the
registered "mindmerger" generator scores the result through the evaluation's factory."""

from __future__ import annotations

import json
import shutil

from prefect import flow

from linguaforge.flows.config import RunConfig
from linguaforge.flows.stages import run_context
from linguaforge.pipelines.benchmarks.loaders import load_raw
from linguaforge.pipelines.benchmarks.prompts import build_items, load_preset
from linguaforge.storage import ArtifactStore
from linguaforge.tasks.common import Source
from linguaforge.tasks.evaluate import generator_factory
from linguaforge.tasks.mindmerger import mindmerger_augmentation, mindmerger_eval_model, mindmerger_mapping
from tests.pipelines.mindmerger_common import one_torch_thread  # noqa: F401  (autouse fixture)

STAGE = {"learning_rate": 0.01, "epochs": 1.0, "global_batch_size": 16, "micro_batch_size": 8, "checkpoint_every": 2}


@flow(name="mindmerger-test")
def two_stages(cfg: RunConfig, llm: Source, encoder: Source, world):
    ctx = run_context(cfg)
    mapping = mindmerger_mapping(ctx, cfg.mindmerger, "base", llm, encoder, world)
    return mapping, mindmerger_augmentation(ctx, cfg.mindmerger, "base", llm, encoder, mapping, world)


def test_stages_commit_skip_on_rerun_and_evaluate(tmp_path, demo_assets, prefect_api):
    cfg = RunConfig.model_validate({
        "languages": ["de", "zh"], "store": {"url": str(tmp_path / "store"), "cache_dir": str(tmp_path / "cache")},
        "mindmerger": {"mapping": STAGE, "augmentation": STAGE | {"max_source_len": 512, "max_target_len": 512}},
        "evaluation": {"batch_size": 4}})
    store = ArtifactStore(cfg.store.url, cache_dir=cfg.store.cache_dir)
    with store.writer("demo_world", "w" * 24, stage="demo_world", stage_version=1, params={}) as w:
        shutil.copytree(demo_assets["world"], w.path, dirs_exist_ok=True)
    world = w.ref
    llm, encoder = Source(uri=str(demo_assets["llm"])), Source(uri=str(demo_assets["encoder"]))

    mapping, augmentation = two_stages(cfg, llm, encoder, world)
    assert not mapping.reused and not augmentation.reused
    files = store.open(augmentation).files()
    for name in ("best/mapping.safetensors", "best/mapping.json", "best/pytorch_model.bin", "last/mapping.json",
                 "data/train.parquet", "data/dev.parquet", "data/stats.json", "models.json", "loss_curve.png"):
        assert name in files
    manifest = store.manifest(augmentation.kind, augmentation.key)
    assert manifest.metrics["final_dev_ppl"] < manifest.metrics["start_dev_ppl"]
    assert manifest.inputs["init"].key == mapping.key
    stats = store.open(mapping).read_json("data/stats.json")
    assert stats["kept_per_language"] == {"de": 100, "zh": 100}
    best = store.open(augmentation).read_json("best/mapping.json")
    assert best["stage"] == "augmentation" and best["encoder"] == str(demo_assets["encoder"])

    again = two_stages(cfg, llm, encoder, world)
    assert all(ref.reused for ref in again) and [r.key for r in again] == [mapping.key, augmentation.key]

    model = mindmerger_eval_model("base", augmentation)
    generator = generator_factory(model.kind)(model, store, run_context(cfg), cfg.evaluation.batch_size)
    rows = load_raw("mgsm", str(demo_assets["world"] / "bench" / "mgsm"), "de")[:2]
    outputs = generator.generate(build_items("mgsm", rows, "de", load_preset("mindmerger")), max_new_tokens=4)
    assert len(outputs) == 2 and json.dumps(outputs)
