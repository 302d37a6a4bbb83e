"""The embedded demo world: a miniature multilingual setting that runs on two CPU cores.

world.py   generates the world's corpora and benchmark files (languages, general text, an English-only
           ability, translations, queries, test items deduplicated against training text)
models.py  the tiny Llama and mT5-style encoder, and their tokenizers trained on the world's text
"""
