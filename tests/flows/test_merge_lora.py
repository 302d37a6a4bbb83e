"""LoRA adapters as merge inputs, as users hold them: a PEFT adapter folder, or mergekit's `model+adapter`. Its delta
(scale · B·A) is computed tensor by tensor as the merge streams; the result equals PEFT's own merge_and_unload()
within float rounding, with no merged copy written anywhere."""

from __future__ import annotations

import pytest
import torch
import yaml

from linguaforge.pipelines.weights import WeightReader
from tests.flows.test_merge_models import _cli, fine_tune

pytestmark = pytest.mark.slow


def _adapter(base_dir, out, seed: int, rslora: bool = False):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False,
                        use_rslora=rslora)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out)
    return out


def _merged_by_peft(model_dir, adapter) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter).merge_and_unload()
    return {n: p.detach() for n, p in model.state_dict().items()}


def _merge(tmp_path, repo_root, base, model: str, name: str):
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump({"base": str(base), "out": str(tmp_path / name),
                                      "models": [{"model": model}], "merge": {"method": "task_arithmetic"}}))
    result = _cli("merge", str(config), cwd=repo_root)
    assert result.returncode == 0, result.stdout + result.stderr
    reader = WeightReader(tmp_path / name)
    return {n: reader.get(n) for n in reader.names()}


@pytest.mark.parametrize("rslora", [False, True])
def test_an_adapter_folder_merges_as_peft_merges_it(demo_assets, tmp_path, repo_root, rslora):
    base = demo_assets["llm"]
    adapter = _adapter(base, tmp_path / "adapter", seed=3, rslora=rslora)
    ours = _merge(tmp_path, repo_root, base, str(adapter), "ours")
    theirs = _merged_by_peft(base, adapter)
    changed = 0
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor, theirs[name], rtol=1e-5, atol=1e-6)
        changed += not torch.equal(tensor, WeightReader(base).get(name))
    assert changed == 3 * 2  # q, v and down of both layers moved, nothing else
    assert not any(p.name.startswith(".ours") for p in tmp_path.iterdir())  # no merged copy left beside it


def test_model_plus_adapter_is_the_model_s_delta_and_the_adapter_s(demo_assets, tmp_path, repo_root):
    base = demo_assets["llm"]
    tune = fine_tune(base, tmp_path / "tune", 9_011)
    adapter = _adapter(tune, tmp_path / "adapter", seed=4)
    ours = _merge(tmp_path, repo_root, base, f"{tune}+{adapter}", "ours")
    theirs = _merged_by_peft(tune, adapter)
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor, theirs[name], rtol=1e-5, atol=1e-6)
    on_base = _merge(tmp_path, repo_root, base, f"{base}+{adapter}", "on-base")  # model = the base: the adapter alone
    alone = _merge(tmp_path, repo_root, base, str(adapter), "alone")
    assert all(torch.equal(on_base[n], alone[n]) for n in alone)
