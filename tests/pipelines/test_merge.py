"""MAET transfer: Eq. 2–5 and the baselines against hand-computed answers on small tensors, the streaming
merge against a dense in-memory merge on the tiny LLM (exactly), the output loading and generating with
transformers, and bad inputs failing clearly with no output left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.maet.decompose import decompose
from linguaforge.pipelines.merging.deltas import SparseDelta, base_weights_digest, write_sparse_delta
from linguaforge.pipelines.merging.engine import MergeSpec, merge
from linguaforge.pipelines.merging.methods.dare import dare_update
from linguaforge.pipelines.merging.methods.maet import family_of, select_t
from linguaforge.pipelines.merging.methods.ties import ties_update
from linguaforge.pipelines.weights import WeightReader

L0 = "model.layers.0."
NAMES = [L0 + "self_attn.q_proj.weight", L0 + "self_attn.k_proj.weight", L0 + "self_attn.v_proj.weight",
         L0 + "mlp.up_proj.weight", "model.norm.weight"]


def _base(folder: Path, values: dict[str, list[float]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({n: torch.tensor(v) for n, v in values.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"note": "hand-built"}))
    return folder


def _delta(path: Path, base_dir: Path, changes: dict[str, list[float]], digest: str | None = None) -> SparseDelta:
    base = WeightReader(base_dir)
    triples = [(n, base.get(n), base.get(n) + torch.tensor(changes[n]) if n in changes else base.get(n))
               for n in base.names()]
    write_sparse_delta(path, triples, "hand", digest or base_weights_digest(base_dir))
    return SparseDelta(path)


@pytest.fixture
def hand(tmp_path):
    base = _base(tmp_path / "base", {n: [1.0, 1.0] for n in NAMES})
    return tmp_path, base


def test_eq2_both_forms_by_hand(hand):
    tmp, base = hand
    q = NAMES[0]
    ap = _delta(tmp / "ap.safetensors", base, {q: [1.0, 0.0], NAMES[1]: [0.0, 2.0]})
    pivot = _delta(tmp / "p.safetensors", base, {q: [1.0, 1.0]})
    lang = _delta(tmp / "l.safetensors", base, {q: [3.0, 1.0]})
    direct = decompose(ap, pivot, {"sw": lang}, tmp / "direct", alpha=0.8, beta=0.2)
    r_a = SparseDelta(direct["ability"])
    assert torch.allclose(r_a.dense(q), torch.tensor([0.8 - 0.2, -0.2]))  # α·[1,0] − β·[1,1]
    assert torch.allclose(r_a.dense(NAMES[1]), torch.tensor([0.0, 1.6]))  # α·[0,2] − β·0
    assert torch.equal(SparseDelta(direct["sw"]).dense(q), torch.tensor([3.0, 1.0]))
    removed = decompose(ap, pivot, {"sw": lang}, tmp / "removed", form="pivot_removed")
    assert torch.equal(SparseDelta(removed["sw"]).dense(q), torch.tensor([2.0, 0.0]))  # [3,1] − [1,1]
    assert SparseDelta(removed["sw"]).names() == [q]  # still sparse: unchanged tensors are not stored
    assert SparseDelta(direct["ability"]).base_digest == base_weights_digest(base)
    foreign = _delta(tmp / "f.safetensors", base, {q: [1.0, 1.0]}, digest="0" * 64)
    with pytest.raises(InputError, match=r"delta language sw .* was made against another base model than"):
        decompose(ap, pivot, {"sw": foreign}, tmp / "never")
    assert not (tmp / "never").exists()


TABLE_3 = ["q", "k", "v", "o", "up", "gate", "down"]


def test_eq3_to_5_by_hand_with_a_tie_at_the_cut(hand):
    tmp, base = hand
    q, k, v, up, norm = NAMES
    ability = _delta(tmp / "a.safetensors", base, {q: [1, 0], k: [1, 1], v: [0, 1], up: [2, 0]})
    l1 = _delta(tmp / "l1.safetensors", base, {q: [1, 0], k: [0, 1], v: [1, 0], up: [1, 0], norm: [0.5, 0.5]})
    l2 = _delta(tmp / "l2.safetensors", base, {up: [1, 0]})
    spec = MergeSpec.pipeline(ability=ability, languages={"l1": l1, "l2": l2}, mu={"l1": 1.0, "l2": 0.5}, k2_percent=50,
                              gamma=0.2, eta=1.0, tensor_families=TABLE_3)  # the paper's ablation: no norms
    report = merge(base, tmp / "out", spec)
    # R_Lang: q [1,0], k [0,1], v [1,0], up [1.5,0]; S: q 1, k 1, v 0, up 3
    assert report["similarity"] == {q: 1.0, k: 1.0, v: 0.0, up: 3.0}
    # descending: up, k, q (tied with k; names break ties), v; the last 50 % of 4 → {q, v}
    assert set(report["selected"]) == {q, v}
    out = WeightReader(tmp / "out")
    expected = {q: [2.2, 1.0],  # in T: τ_o + 0.2·[1,0] + 1.0·[1,0]
                k: [1.0, 2.0],  # not in T: τ_o + R_Lang
                v: [2.0, 1.2],  # in T: τ_o + 0.2·[0,1] + 1.0·[1,0]
                up: [2.5, 1.0],  # not in T: τ_o + [1.5, 0]
                norm: [1.5, 1.5]}  # not an eligible family: τ_o + R_Lang
    for name, values in expected.items():
        assert torch.allclose(out.get(name), torch.tensor(values)), name
    assert (tmp / "out" / "config.json").exists()


def test_k2_cut_counts_and_ties():
    sims = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.0}
    assert select_t(sims, 50) == ["c", "d"]  # equal S: by name, so the later names fall into T
    assert select_t(sims, 0) == [] and select_t(sims, 100) == ["a", "b", "c", "d"]
    assert len(select_t(dict.fromkeys("abcdefghij", 0.0), 80)) == 8  # 80 % of 10, no float drift
    assert len(select_t(dict.fromkeys("abc", 0.0), 50)) == 2  # 1.5 rounds half up


def test_task_vector_ties_and_dare_by_hand(hand):
    tmp, base = hand
    cpt = _delta(tmp / "cpt.safetensors", base, {NAMES[0]: [2.0, 4.0]})
    merge(base, tmp / "tv", MergeSpec.pipeline("task_arithmetic", ability=cpt, task_vector_lambda=0.5))
    assert torch.equal(WeightReader(tmp / "tv").get(NAMES[0]), torch.tensor([2.0, 3.0]))  # 1 + 0.5·[2, 4]

    # TIES, density 0.5: keep the 2 largest of each; elect signs by total mass; disjoint mean
    d1, d2 = torch.tensor([1.0, -2.0, 3.0, 0.1]), torch.tensor([-1.0, -3.0, 2.0, 0.0])
    assert torch.equal(ties_update([d1, d2], 0.5), torch.tensor([0.0, -2.5, 2.5, 0.0]))
    # density 1: entry 0 sums to −2, so only d2's −3 agrees; entry 1 both agree → mean 1.5
    assert torch.equal(ties_update([torch.tensor([1.0, 2.0]), torch.tensor([-3.0, 1.0])], 1.0),
                       torch.tensor([-3.0, 1.5]))

    ones = torch.ones(2000)
    dropped = dare_update([ones], [1.0], 0.5, torch.Generator().manual_seed(3))
    assert set(dropped.unique().tolist()) <= {0.0, 2.0}  # dropped, or rescaled by 1/(1 − 0.5)
    assert 0.45 < float((dropped > 0).float().mean()) < 0.55
    assert torch.equal(dropped, dare_update([ones], [1.0], 0.5, torch.Generator().manual_seed(3)))


def test_family_table():
    assert [family_of(n) for n in NAMES] == ["q", "k", "v", "up", "norm"]
    assert family_of("model.embed_tokens.weight") == "embed" and family_of("lm_head.weight") == "lm_head"
    assert family_of("model.layers.3.mlp.down_proj.weight") == "down"


# -- on the tiny LLM ----------------------------------------------------------------------------------
def _cpt_delta(path: Path, base_dir: Path, seed: int, granularity: str, share: float = 0.1) -> SparseDelta:
    """A masked-CPT-like delta changing `share` of the rows (stored in row form) or of the entries (element
    form); different seeds give overlapping, different supports."""
    g = torch.Generator().manual_seed(seed)
    base = WeightReader(base_dir)
    triples = []
    for n in base.names():
        t = base.get(n)
        if granularity == "row":
            trained = (torch.rand(t.shape[0], generator=g) < share).view(-1, *([1] * (t.ndim - 1)))
        else:
            trained = torch.rand(t.shape, generator=g) < share
        triples.append((n, t, t + torch.randn(t.shape, generator=g) * 0.01 * trained))
    write_sparse_delta(path, triples, "tiny", base_weights_digest(base_dir))
    return SparseDelta(path)


@pytest.mark.parametrize("granularity", ["row", "element"])
def test_streaming_merge_equals_a_dense_merge_and_generates(demo_assets, tmp_path, granularity):
    llm = demo_assets["llm"]
    ap, p = _cpt_delta(tmp_path / "ap.st", llm, 1, granularity), _cpt_delta(tmp_path / "p.st", llm, 2, granularity)
    langs = {c: _cpt_delta(tmp_path / f"{c}.st", llm, seed, granularity) for c, seed in (("de", 3), ("sw", 4))}
    matrices = [n for n in ap.names() if len(ap.shapes[n]) == 2]
    assert {ap.form(n) for n in matrices} == {granularity}  # the sparse path under test, not a dense fallback
    parts = decompose(ap, p, langs, tmp_path / "decomposed", alpha=0.8, beta=0.2)
    spec = MergeSpec.pipeline(ability=SparseDelta(parts["ability"]), languages={c: SparseDelta(parts[c]) for c in langs},
                     mu={"de": 0.7, "sw": 1.3}, k2_percent=60, gamma=0.2, eta=1.0)
    report = merge(llm, tmp_path / "merged", spec, shard_bytes=40_000)
    assert len(report["files"]) > 1  # sharded, with an index
    assert (tmp_path / "merged" / "model.safetensors.index.json").exists()

    # dense reference: every model whole in memory, the equations written out directly
    base = WeightReader(llm)
    full = {n: base.get(n).float() for n in base.names()}
    r_a = {n: 0.8 * ap.dense(n) - 0.2 * p.dense(n) for n in full}
    r_lang = {n: 0.7 * langs["de"].dense(n) + 1.3 * langs["sw"].dense(n) for n in full}
    eligible = [n for n in full if family_of(n) in spec.params["tensor_families"]]
    sims = {n: float(torch.dot(r_a[n].flatten().double(), r_lang[n].flatten().double())) for n in eligible}
    ordered = sorted(eligible, key=lambda n: (-sims[n], n))
    t_set = set(ordered[len(ordered) - round(len(ordered) * 0.6):])
    assert set(report["selected"]) == t_set
    merged = WeightReader(tmp_path / "merged")
    for n, tau in full.items():
        expected = tau + (0.2 * r_a[n] + 1.0 * r_lang[n]) if n in t_set else tau + r_lang[n]
        assert torch.equal(merged.get(n), expected.to(base.get(n).dtype)), n

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    out = model.generate(torch.tensor([[1, 5, 9]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)


# -- bad input ----------------------------------------------------------------------------------------
def test_bad_inputs_fail_clearly_and_leave_no_output(hand, demo_assets):
    tmp, base = hand
    q = NAMES[0]
    good = _delta(tmp / "good.st", base, {q: [1.0, 1.0]})
    out = tmp / "out"

    def fails(spec: MergeSpec, match: str, **kwargs):
        with pytest.raises(InputError, match=match):
            merge(base, out, spec, **kwargs)
        assert not out.exists() and not list(tmp.glob(".out-*"))

    foreign = _delta(tmp / "foreign.st", base, {q: [1.0, 1.0]}, digest="0" * 64)
    fails(MergeSpec.pipeline(ability=foreign, languages={"sw": good}), r"delta ability .* was made against another base")
    other = _base(tmp / "other", {n: [1.0, 1.0, 1.0] for n in NAMES})
    wrong_shape = _delta(tmp / "shape.st", other, {q: [1.0, 1.0, 1.0]}, digest=base_weights_digest(base))
    fails(MergeSpec.pipeline(ability=good, languages={"sw": wrong_shape}), r"delta language sw .*: tensor .* is \(3,\), \(2,\) in the base model")
    nan = _delta(tmp / "nan.st", base, {q: [float("nan"), 1.0]})
    fails(MergeSpec.pipeline(ability=good, languages={"sw": nan}), r"q_proj.weight has NaN or Inf")
    with pytest.raises(InputError, match=r"missing \['sw'\], extra \['de'\]"):
        MergeSpec.pipeline(ability=good, languages={"sw": good}, mu={"de": 1.0})
    with pytest.raises(InputError, match=r"merge.k2_percent: Input should be less than or equal to 100"):
        MergeSpec.pipeline(ability=good, languages={"sw": good}, k2_percent=120)
    fails(MergeSpec.pipeline(ability=good, languages={"sw": good}, tensor_families=["embed"]), "match no tensor of the base model")
    fails(MergeSpec.pipeline(ability=good, languages={"sw": good}), r"do not match the languages \['de', 'sw'\]",
          expected_languages=["de", "sw"])


def test_selection_ties_flag_a_cut_the_data_did_not_decide():
    from linguaforge.pipelines.merging.methods.maet import selection_ties, selection_warning

    decided = {"a": 0.9, "b": 0.5, "c": 0.1, "d": 0.0}
    assert selection_ties(decided, set(select_t(decided, 50))) == 0  # T = {c, d}: 0.1 < 0.5, a clean cut
    flat = {"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.7}
    chosen = set(select_t(flat, 50))  # two of the three zeros, picked by name
    assert chosen == {"b", "c"} and selection_ties(flat, chosen) == 3
    warning = selection_warning({"ties_at_cut": 3, "zero_similarity": 3})
    assert "DEGENERATE" in warning and "3 tensors tie" in warning
    assert selection_warning({"ties_at_cut": 0, "zero_similarity": 5}) == ""
