"""`linguaforge merge` on what users hold: fine-tuned model folders (local and s3://, deltas computed on the fly),
mergekit's own YAML, every method; each output checked against the arithmetic written out by hand on whole
tensors, loaded with plain transformers, and carrying a model card. Bad mergekit configs fail by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from linguaforge.pipelines.weights import WeightReader


def fine_tune(base_dir: Path, out: Path, seed: int, share: float = 0.05) -> Path:
    """A fine-tune of the base that changes `share` of every tensor's entries (saved as transformers saves)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    g = torch.Generator().manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    with torch.no_grad():
        for p in model.parameters():
            changed = torch.rand(p.shape, generator=g) < share
            p.add_(torch.randn(p.shape, generator=g) * 0.02 * changed)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "linguaforge.flows.cli", *args], cwd=cwd,
                          env={**os.environ, "COLUMNS": "200"}, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tunes(demo_assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("tunes")
    # seeds far from DARE's per-tensor ones (seed·1 000 003 + position): a shared stream would correlate the
    # fine-tune's changed entries with DARE's drops
    return {"base": demo_assets["llm"], "math": fine_tune(demo_assets["llm"], root / "math", 7_001),
            "lang": fine_tune(demo_assets["llm"], root / "lang", 7_002)}


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    reader = WeightReader(folder)
    return {n: reader.get(n) for n in reader.names()}


def test_task_arithmetic_over_model_folders_and_an_s3_model(tunes, s3_bucket, tmp_path, repo_root):
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.put(str(tunes["lang"]) + "/", f"{s3_bucket}/models/lang/", recursive=True)
    config = {"base": str(tunes["base"]), "out": str(tmp_path / "merged"), "cache_dir": str(tmp_path / "cache"),
              "models": [{"model": str(tunes["math"]), "weight": 0.7},
                         {"model": f"s3://{s3_bucket}/models/lang", "weight": 0.4}],
              "merge": {"method": "task_arithmetic", "task_vector_lambda": 0.5}}
    (tmp_path / "merge.yaml").write_text(yaml.safe_dump(config))
    result = _cli("merge", str(tmp_path / "merge.yaml"), cwd=repo_root)
    assert result.returncode == 0, result.stdout + result.stderr

    base, a, b = _tensors(tunes["base"]), _tensors(tunes["math"]), _tensors(tunes["lang"])
    merged = _tensors(tmp_path / "merged")
    for n, t in base.items():  # the fp32 reference, rounded once
        expected = t.float() + 0.5 * (0.7 * (a[n].float() - t.float()) + 0.4 * (b[n].float() - t.float()))
        assert torch.equal(merged[n], expected.to(t.dtype)), n
    card = (tmp_path / "merged" / "README.md").read_text()
    assert "task_arithmetic" in card and f"s3://{s3_bucket}/models/lang" in card and "| task_vector_lambda | 0.5 |" in card

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert model.generate(torch.tensor([[1, 4, 2]]), max_new_tokens=3, do_sample=False).shape == (1, 6)


MERGEKIT_TIES = """\
models:
  - model: {math}
    parameters:
      density: [1, 0.7, 0.1] # density gradient
      weight: 1.0
  - model: {lang}
    parameters:
      density: 0.5
      weight:
        - filter: mlp
          value: 0.5
        - value: 0
merge_method: ties
base_model: {base}
parameters:
  normalize: true
  int8_mask: true
dtype: float16
"""


def test_a_mergekit_ties_yaml_runs_unchanged(tunes, tmp_path, repo_root):
    """The README's TIES example (gradients and filter rules included) with our two fine-tunes as its models."""
    from linguaforge.pipelines.merging.methods.ties import ties_update
    from linguaforge.pipelines.merging.parameters import layer_position

    (tmp_path / "ties.yml").write_text(MERGEKIT_TIES.format(**{k: str(v) for k, v in tunes.items()}))
    result = _cli("merge", str(tmp_path / "ties.yml"), "--out", str(tmp_path / "merged"), cwd=repo_root)
    assert result.returncode == 0, result.stdout + result.stderr

    base, a, b = _tensors(tunes["base"]), _tensors(tunes["math"]), _tensors(tunes["lang"])
    merged = _tensors(tmp_path / "merged")
    position = layer_position(list(base))
    for n, t in base.items():
        s = position[n] * 2  # the density gradient [1, 0.7, 0.1] at t
        density = (1 - (s - int(s))) * [1, 0.7, 0.1][int(s)] + (s - int(s)) * [1, 0.7, 0.1][min(2, int(s) + 1)]
        lang_weight = 0.5 if "mlp" in n else 0.0
        expected = t.float() + ties_update([a[n].float() - t.float(), b[n].float() - t.float()], [density, 0.5],
                                           [1.0, lang_weight])
        assert merged[n].dtype == torch.float16 and torch.equal(merged[n], expected.half()), n
    assert any(not torch.equal(merged[n], base[n].half()) for n in base if "mlp" in n)
    assert '"torch_dtype": "float16"' in (tmp_path / "merged" / "config.json").read_text()


def test_maet_dare_and_ties_over_model_folders_and_the_model_card(tunes, tmp_path, repo_root):
    """MAET's job form with fine-tuned models in place of the masked-CPT deltas: decomposed on the fly."""
    config = {"base": str(tunes["base"]), "out": str(tmp_path / "maet"),
              "deltas": {"ability_pivot": str(tunes["math"]), "pivot": str(tunes["lang"]),
                         "languages": {"sw": str(tunes["lang"])}},
              "merge": {"method": "maet", "k2_percent": 50, "gamma": 1.0}}
    (tmp_path / "maet.yaml").write_text(yaml.safe_dump(config))
    result = _cli("merge", str(tmp_path / "maet.yaml"), cwd=repo_root)
    assert result.returncode == 0, result.stdout + result.stderr
    card = (tmp_path / "maet" / "README.md").read_text()
    assert "T (the tensors that get γ R(A))" in card and "| family | in T | eligible |" in card

    base, a, b = _tensors(tunes["base"]), _tensors(tunes["math"]), _tensors(tunes["lang"])
    for method, extra in (("dare", {"dare_drop": 0.5}), ("ties", {"ties_density": 0.3})):
        job = {"base": str(tunes["base"]), "out": str(tmp_path / method), "merge": {"method": method, **extra},
               "models": [{"model": str(tunes["math"])}, {"model": str(tunes["lang"]), "weight": 0.5}]}
        (tmp_path / f"{method}.yaml").write_text(yaml.safe_dump(job))
        result = _cli("merge", str(tmp_path / f"{method}.yaml"), cwd=repo_root)
        assert result.returncode == 0, result.stdout + result.stderr
        merged = _tensors(tmp_path / method)
        changed = sum(int((merged[n] != base[n]).sum()) for n in base)
        touched = sum(int(((a[n] != base[n]) | (b[n] != base[n])).sum()) for n in base)
        assert 0 < changed <= touched  # only entries some fine-tune changed move, and some do
        if method == "dare":  # about half of each delta survives the drop
            kept = sum(int(((merged[n] != base[n]) & (a[n] != base[n]) & (b[n] == base[n])).sum()) for n in base)
            only_a = sum(int(((a[n] != base[n]) & (b[n] == base[n])).sum()) for n in base)
            assert 0.4 < kept / only_a < 0.6


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: {"merge_method": "slerp"}, "merge_method 'slerp' is not one linguaforge runs"),
    (lambda t: {"slices": [{"sources": []}]}, "'slices' is not supported"),
    (lambda t: {"parameters": {"normalize": False}}, "parameters.normalize: False is not supported for ties"),
    (lambda t: {"tokenizer_source": "union"}, "tokenizer_source 'union' is not supported"),
    (lambda t: {"base_model": None}, "base_model is required"),
    (lambda t: {"models": [{"model": str(t["base"])}]}, "models lists no model besides the base"),
    (lambda t: {"models": [{"model": str(t["math"]), "parameters": {"weight": float("nan")}}]},
     "weight: nan is not a finite number"),
])
def test_bad_mergekit_configs_are_refused_by_name(tunes, tmp_path, repo_root, change, message):
    data = yaml.safe_load(MERGEKIT_TIES.format(**{k: str(v) for k, v in tunes.items()})) | change(tunes)
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(data))
    result = _cli("merge", str(tmp_path / "bad.yml"), "--out", str(tmp_path / "never"), cwd=repo_root)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "never").exists()


NEW_METHOD = '''
"""A made-up method, to show that a method is one file: the weighted mean of the deltas times `shrink`."""
from pydantic import Field

from linguaforge.pipelines.merging.methods import MergeMethod, dense_rule


def plan(inputs, params, context):
    def update(name):
        total = sum(i.weight_of(name, 0.0) for i in inputs)
        return sum(i.weight_of(name, 0.0) * i.delta.dense(name) for i in inputs) * params["shrink"] / total
    return dense_rule(update)


METHOD = MergeMethod(name="shrunk_mean", summary="shrunk mean", plan=plan,
                     parameters={"shrink": (float, Field(0.5, gt=0, le=1, description="Scale of the mean."))})
'''


def test_a_new_merge_method_is_one_file(tunes, tmp_path, repo_root):
    """Copy the science into a scratch tree, add one file to methods/, and the method is in MergeConfig (its
    enum, its parameter, its cache key) and merges through the engine."""
    import shutil

    tree = tmp_path / "tree" / "linguaforge"
    tree.mkdir(parents=True)
    (tree / "__init__.py").write_text("")
    shutil.copytree(repo_root / "pipelines", tree / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "pipelines" / "merging" / "methods" / "shrunk_mean.py").write_text(NEW_METHOD)
    script = f"""
import torch
from linguaforge.pipelines.merging.settings import MergeConfig
from linguaforge.pipelines.merging.engine import MergeSpec, merge
from linguaforge.pipelines.merging.inputs import MergeInput, ModelDelta
from linguaforge.pipelines.weights import WeightReader
import linguaforge.pipelines.merging.settings as s
assert s.__file__.startswith({str(tree)!r}), s.__file__
config = MergeConfig(method="shrunk_mean", shrink=0.25)
assert config.key_params("shrunk_mean", False)["shrink"] == 0.25
base = WeightReader({str(tunes["base"])!r})
inputs = [MergeInput("m", ModelDelta({str(tunes["math"])!r}, base, "m"), weight=1.0),
          MergeInput("l", ModelDelta({str(tunes["lang"])!r}, base, "l"), weight=3.0)]
merge({str(tunes["base"])!r}, {str(tmp_path / "out")!r}, MergeSpec("shrunk_mean", inputs, config.method_params("shrunk_mean")))
out, a, b = WeightReader({str(tmp_path / "out")!r}), WeightReader({str(tunes["math"])!r}), WeightReader({str(tunes["lang"])!r})
for n in base.names():
    t = base.get(n).float()
    expected = t + 0.25 * (1.0 * (a.get(n).float() - t) + 3.0 * (b.get(n).float() - t)) / 4.0
    assert torch.allclose(out.get(n), expected.to(base.get(n).dtype), atol=1e-6), n
print("ok", sorted(MergeConfig.model_fields["method"].annotation.__args__))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tree.parent)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "shrunk_mean" in result.stdout and "maet" in result.stdout


def test_a_card_carries_its_inputs_and_the_configuration_that_rebuilds_it_bit_for_bit(tunes, tmp_path, repo_root):
    from huggingface_hub import ModelCard

    from linguaforge.pipelines.merging.card import reproduction_config

    config = {"base": str(tunes["base"]), "out": str(tmp_path / "first"),
              "models": [{"model": str(tunes["math"]), "weight": 0.6, "density": 0.5},
                         {"model": str(tunes["lang"]), "weight": 0.4, "density": 0.7}],
              "merge": {"method": "dare"}, "seed": 11, "dtype": "bfloat16"}
    (tmp_path / "merge.yaml").write_text(yaml.safe_dump(config))
    assert _cli("merge", str(tmp_path / "merge.yaml"), cwd=repo_root).returncode == 0
    card = ModelCard.load(tmp_path / "first" / "README.md")
    assert card.data.base_model == [str(tunes["base"]), str(tunes["math"]), str(tunes["lang"])]
    assert {"merge", "linguaforge", "dare"} <= set(card.data.tags)
    again = reproduction_config(tmp_path / "first" / "README.md")
    assert "out" not in again and again["seed"] == 11
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(again))
    result = _cli("merge", str(tmp_path / "again.yaml"), "--out", str(tmp_path / "second"), cwd=repo_root)
    assert result.returncode == 0, result.stdout + result.stderr
    first = {p.name: p.read_bytes() for p in (tmp_path / "first").iterdir()}
    assert first == {p.name: p.read_bytes() for p in (tmp_path / "second").iterdir()}  # every byte, the card too
