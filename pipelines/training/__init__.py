"""The training core: one loop (loop.py) that every training stage runs as a recipe.

settings.py          the optimisation settings every back end reads
loop.py              `train(backend, recipe)`: resume, steps of token-weighted micro-batches, checkpoints
causal_lm.py         the causal-LM recipe over packed blocks (bootstrap, probes, masked and full CPT)
backends.py          the plain torch back end and pickle-free optimizer state
deepspeed_backend.py the DeepSpeed (ZeRO 0–3) back end behind the same interface
launcher.py          several training processes under torchrun, their progress lines forwarded
cpt.py               one CPT of a causal LM (bootstrap, probes, masked and full CPT), in-process or as torchrun
                     workers (cpt_worker.py); which weights train is a Restriction its caller brings (MAET's mask)

The MindMerger stages are a recipe too (pipelines/mindmerger/train.py).
"""
