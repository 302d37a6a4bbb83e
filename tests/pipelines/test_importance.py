"""Eq. 1 on hand-built tensors: scores, exact top-k1 % at both granularities, ties, bounded-memory selection."""

from __future__ import annotations

import math

import pytest
import torch

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.maet.importance import (
    NeuronMask,
    ScoreSource,
    delta_score_source,
    neuron_scores,
    select_top_k,
)

BASE = {"A": torch.zeros(3, 2), "B": torch.zeros(2)}
PROBED = {"A": torch.tensor([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0]]), "B": torch.tensor([0.5, -2.0])}


def _source(granularity):
    return delta_score_source(["A", "B"], BASE.__getitem__, PROBED.__getitem__, granularity)


def test_scores_by_hand():
    assert neuron_scores(PROBED["A"], "row").tolist() == [5.0, 1.0, 1.0]  # row-delta L2 norms
    assert neuron_scores(PROBED["B"], "row").tolist() == [0.5, 2.0]  # 1-D: each element a neuron
    assert neuron_scores(PROBED["A"], "element").tolist() == [3.0, 4.0, 0.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("k1, expected_a, expected_b", [
    (40, [True, False, False], [False, True]),   # k = ceil(5 * 0.4) = 2: scores 5 and 2
    (60, [True, True, False], [False, True]),    # k = 3: the tie at 1.0 goes to the earlier row
    (100, [True, True, True], [True, True]),
])
def test_global_row_selection(k1, expected_a, expected_b):
    masks = select_top_k(_source("row"), k1, "row")
    assert masks["A"].tolist() == expected_a and masks["B"].tolist() == expected_b


def test_global_element_selection():
    masks = select_top_k(_source("element"), 25, "element")  # 8 neurons, k = 2: the 4 and the 3
    assert masks["A"].tolist() == [True, True, False, False, False, False]
    assert masks["B"].tolist() == [False, False]
    masks = select_top_k(_source("element"), 75, "element")  # k = 6: 4, 3, 2, 1, 1, 0.5
    assert masks["A"].tolist() == [True, True, False, True, True, False] and masks["B"].tolist() == [True, True]
    masks = select_top_k(_source("element"), 87.5, "element")  # k = 7 > 6 positives: first zero (A[0,?])
    assert int(masks["A"].sum() + masks["B"].sum()) == 7 and masks["A"].tolist()[2] is True


def test_per_tensor_selection():
    masks = select_top_k(_source("row"), 50, "row", selection="per_tensor")
    assert masks["A"].tolist() == [True, True, False]  # ceil(1.5) = 2 rows; tie broken by index
    assert masks["B"].tolist() == [False, True]


@pytest.mark.parametrize("k1", [0.5, 5, 37, 99])
def test_histogram_selection_equals_a_full_sort(k1):
    g = torch.Generator().manual_seed(int(k1 * 10))
    tensors = {f"t{i}": torch.randn(64, 33, generator=g) ** 3 for i in range(5)}
    tensors["dup"] = torch.full((40,), 0.25)  # many exact ties
    source = ScoreSource(list(tensors), {n: tuple(t.shape) for n, t in tensors.items()},
                         lambda n: neuron_scores(tensors[n], "element"))
    masks = select_top_k(source, k1, "element")
    scores = torch.cat([neuron_scores(t, "element") for t in tensors.values()])
    k = math.ceil(scores.numel() * k1 / 100)
    picked = torch.cat([masks[n] for n in tensors])
    assert int(picked.sum()) == k
    assert scores[picked].min() >= scores[~picked].max()


def test_bad_k1_and_mask_round_trip(tmp_path):
    for bad in (0, -1, 100.5, float("nan")):
        with pytest.raises(InputError, match="k1 must be in"):
            select_top_k(_source("row"), bad, "row")
    mask = NeuronMask("row", {"A": (3, 2), "B": (2,)}, select_top_k(_source("row"), 60, "row"), 60.0)
    mask.save(tmp_path / "m.safetensors")
    back = NeuronMask.load(tmp_path / "m.safetensors")
    assert back.selected() == {"A": 2, "B": 1} and back.k1_percent == 60.0
    assert back.full("A").tolist() == [[True, True], [True, True], [False, False]]
    with pytest.raises(InputError, match=r"tensor A is \(3, 2\) in the mask, \(4, 2\) in the model"):
        back.check_model({"A": (4, 2), "B": (2,)}, "model X")
    with pytest.raises(InputError, match="it has tensor 'B', the model does not"):
        back.check_model({"A": (3, 2)}, "model X")
