"""MindMerger: a frozen multilingual encoder in front of a frozen LLM, joined by a small trained mapping.

model.py      the model and its packed batch (labels built with the inputs, so they cannot drift apart)
data.py       translation pairs and translated task queries → tokenized examples, dev split, skips counted
train.py      the two-stage training loop (mapping, then augmentation) on the CPT back ends
checkpoint.py mapping weights: official `pytorch_model.bin` import/export, safetensors with metadata
generate.py   greedy decoding and option scoring behind the benchmark evaluation's generator interface
"""
