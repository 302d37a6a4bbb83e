"""Merging: deltas against one base (sparse delta files, or fine-tuned model folders taken as θ − θ_base on the
fly) combined by a registered method into an HF model folder, streaming, with a model card.

methods/     one file per method (maet, task_arithmetic, ties, dare): its parameters, its rule; the registry
settings.py  MergeConfig: the shared fields plus every method's own (torch-free)
inputs.py    what a merge takes: deltas with weights and densities (mergekit's per-tensor forms included)
deltas.py    sparse deltas against one base: write, read, the base's identity, sparse arithmetic (Compact)
engine.py    the streaming merge: check, plan, τ̃ tensor by tensor into shards, publish whole or not at all
card.py      the model card README.md of a merged folder
mergekit.py  a mergekit YAML read as a linguaforge merge job (the methods both tools share)
"""
