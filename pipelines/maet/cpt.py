"""MAET's side of CPT (the training itself is pipelines/training/cpt.py): a finished probe turned into a key-neuron
mask (Eq. 1), and a trained model stored as a sparse delta against its base."""

from __future__ import annotations

from pathlib import Path

import torch

from linguaforge.pipelines.maet.importance import (
    GradientSum,
    NeuronMask,
    check_k1,
    delta_score_source,
    select_top_k,
)
from linguaforge.pipelines.merging.deltas import base_weights_digest, write_sparse_delta
from linguaforge.pipelines.weights import WeightReader

DELTA_FILE = "delta.safetensors"  # a CPT artifact's sparse delta from the base


def key_neuron_mask(base_dir: str, probed: dict[str, torch.Tensor], k1_percent: float, granularity: str,
                    selection: str, gradients: GradientSum | None = None) -> NeuronMask:
    """Eq. 1 on a finished probe: importance = |θ' − θ| per neuron (or, given `gradients`, |Σ_t g_t|), top k1 %
    kept. The base is read one tensor at a time from its safetensors, so selection memory stays a few tensors."""
    check_k1(k1_percent)
    base = WeightReader(base_dir)
    names = [n for n in base.names() if n in probed]
    source = (gradients.score_source(names, granularity) if gradients is not None
              else delta_score_source(names, base.get, probed.__getitem__, granularity))
    masks = select_top_k(source, k1_percent, granularity, selection)
    return NeuronMask(granularity, source.shapes, masks, k1_percent)


def write_cpt_delta(path: Path, base_dir: str, base_id: str, trained: dict[str, torch.Tensor]) -> dict[str, int]:
    """θ_trained − θ_base as a sparse delta (only changed entries), tagged with the base's identity."""
    base = WeightReader(base_dir)
    triples = ((n, base.get(n), trained.get(n, base.get(n))) for n in base.names())
    return write_sparse_delta(path, triples, base_id=base_id, base_digest=base_weights_digest(base_dir))
