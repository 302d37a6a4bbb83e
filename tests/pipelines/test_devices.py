"""One device setting, honoured by every compute path: probe / CPT / masked CPT / bootstrap training, MindMerger
training and generation, evaluation by generation and by log-likelihood. A global forward hook records the
device of every parameter and input that reaches a module; each path must compute on the configured device only.
(On this CPU machine the configured device is the CPU; `make gpu-check` runs the same paths on CUDA.) A device
the machine lacks is refused before anything runs."""

from __future__ import annotations

import pytest
import torch

from linguaforge.flows.config import RunConfig
from linguaforge.flows.preflight import check_run
from linguaforge.pipelines.devices import resolve_device, stage_device
from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.training.settings import TrainConfig, TrainSettings


@pytest.fixture
def seen():
    """The devices of every parameter and tensor input of every module forward while the test runs."""
    devices: set[str] = set()

    def hook(module, args):
        devices.update(str(p.device) for p in module.parameters(recurse=False))
        devices.update(str(a.device) for a in args if torch.is_tensor(a))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    yield devices
    handle.remove()


def test_cpt_paths_compute_on_the_configured_device(demo_assets, tmp_path, seen):
    from linguaforge.pipelines.corpus import pack_corpus
    from linguaforge.pipelines.maet.importance import NeuronMask
    from linguaforge.pipelines.maet.masked import KeyNeurons
    from linguaforge.pipelines.models import load_tokenizer
    from linguaforge.pipelines.settings import CorpusPrepConfig
    from linguaforge.pipelines.training.cpt import run_cpt

    text = (demo_assets["world"] / "translation" / "de" / "train.de").read_text().splitlines()
    pack_corpus(text, load_tokenizer(str(demo_assets["llm"])), tmp_path, CorpusPrepConfig(block_size=32))
    settings = TrainSettings.of(TrainConfig(steps=1, batch_tokens=64, micro_batch_size=2), seed=0, device="cpu")
    assert settings.device == "cpu"
    run_cpt(str(demo_assets["llm"]), str(tmp_path), settings)  # probe, full CPT, bootstrap: this function
    from linguaforge.pipelines.weights import WeightReader

    shapes = {n: s for n, s in WeightReader(demo_assets["llm"]).shapes().items() if n.endswith("mlp.up_proj.weight")}
    mask = NeuronMask("row", shapes, {n: torch.ones(s[0], dtype=torch.bool) for n, s in shapes.items()})
    run_cpt(str(demo_assets["llm"]), str(tmp_path), settings, KeyNeurons(mask))  # masked CPT
    assert seen == {"cpu"}


def test_mindmerger_training_and_generation_compute_on_the_configured_device(demo_assets, tmp_path, seen):
    from linguaforge.pipelines.benchmarks.items import BenchmarkItem
    from linguaforge.pipelines.mindmerger.generate import MindMergerGenerator
    from linguaforge.pipelines.mindmerger.settings import StageSettings
    from linguaforge.pipelines.mindmerger.train import ModelPair, run_stage_training
    from tests.pipelines import mindmerger_common as mm

    examples = mm.mapping_examples(demo_assets, per_language=3)
    settings = StageSettings(epochs=1, global_batch_size=4, micro_batch_size=2, cache_encoder_states=False,
                             device="cpu")
    run_stage_training(ModelPair(str(demo_assets["encoder"]), str(demo_assets["llm"])), examples[:8], examples[8:10],
                       settings, tmp_path / "out")
    generator = MindMergerGenerator(mm.model(demo_assets), *mm.tokenizers(demo_assets), device="cpu")
    item = BenchmarkItem(id="1", benchmark="mgsm", language="de", prompt="Answer:", source_text="Anna hat zwei.",
                         gold="2")
    generator.generate([item], max_new_tokens=3)
    assert seen == {"cpu"}


def test_evaluation_generates_and_scores_on_the_configured_device(demo_assets, seen):
    from linguaforge.pipelines.benchmarks.items import BenchmarkItem
    from linguaforge.pipelines.generation.causal_lm import HFCausalLMGenerator

    generator = HFCausalLMGenerator.from_pretrained(str(demo_assets["llm"]), device="cpu", batch_size=2)
    items = [BenchmarkItem(id="1", benchmark="xnli", language="en", prompt="It rains.", source_text="", gold="A",
                           continuations=(" yes", " no"))]
    generator.option_logprobs(items)  # loads transformers' model: its forward passes are hooked
    assert generator.device == torch.device("cpu") and seen == {"cpu"}


def test_a_stage_s_own_device_wins_over_the_run_s():
    assert stage_device(None, "cuda:1") == "cuda:1" and stage_device("cpu", "cuda:1") == "cpu"
    assert TrainSettings.of(TrainConfig(device="cpu"), 0, "cuda").device == "cpu"
    assert TrainSettings.of(TrainConfig(), 0, "cuda:3").device == "cuda:3"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_is_refused_before_anything_runs():
    with pytest.raises(InputError, match="no CUDA device"):
        resolve_device("cuda")
    config = RunConfig(device="cuda:1", mindmerger={"enabled": False}, evaluation={"enabled": False})
    with pytest.raises(ValueError, match=r"device: cuda:1 asked for, but this machine has no CUDA device"):
        check_run(config, "test")
    assert resolve_device("auto") == torch.device("cpu")
