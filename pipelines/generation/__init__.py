"""Generation: the model side of evaluation, for plain causal LMs and MindMerger alike.

    base.py           the protocols the evaluation drives, stop strings, batching that survives out-of-memory
    causal_lm.py      any HF causal LM: batched greedy decoding (CPU decode streams; the same loop on CUDA),
                      option log-likelihoods in one packed forward pass
    greedy.py         the greedy loop every decoder shares (EOS, stop strings, rows leaving the batch)
    llama_decoder.py  the CPU fast path for plain Llama checkpoints (no transformers model import)

A MindMerger model generates with pipelines/mindmerger/generate.py, a BatchedGenerator on the same loop.
"""
