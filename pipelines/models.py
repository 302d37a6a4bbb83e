"""Loading models and tokenizers the way real runs do: HF hub ids, local folders, or remote folders (s3://, gs://).

The demo's tiny models go through exactly these functions, from folders written with `save_pretrained`.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import torch

# Resolved here, at import, on one thread: transformers' lazy module attributes are not safe to resolve
# for the first time from several task threads at once (seen as "cannot import name AutoModelForCausalLM").
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MT5Config,
    MT5EncoderModel,
    MT5ForConditionalGeneration,
    PreTrainedTokenizerFast,
    T5EncoderModel,
    UMT5EncoderModel,
)
from transformers.utils import logging as hf_logging

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.loading import load_tokenizer, loading_errors  # noqa: F401  (load_tokenizer: re-exported)
from linguaforge.pipelines.locations import check_model_location, resolve_file, resolve_model_dir  # noqa: F401
from linguaforge.pipelines.weights import TORCH_DTYPES

__all__ = ["AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoTokenizer", "GenerationConfig", "LlamaConfig",
           "LlamaForCausalLM", "MT5Config", "MT5EncoderModel", "MT5ForConditionalGeneration",
           "PreTrainedTokenizerFast", "T5EncoderModel", "UMT5EncoderModel", "hf_logging"]

# Building or loading a model is serialised within a process: transformers' loading initialises modules on
# the meta device through process-wide switches, so a module created in another thread meanwhile (a
# MindMerger mapping, a tiny demo model) could come out with meta parameters ("Cannot copy out of meta
# tensor"). Stage tasks run in threads; loading is a small part of their time.
MODEL_BUILD_LOCK = threading.RLock()

def torch_dtype(name: str) -> torch.dtype:
    try:
        return TORCH_DTYPES[name]
    except KeyError:
        raise InputError(f"dtype {name!r} is not one of {sorted(TORCH_DTYPES)}") from None


def load_causal_lm(uri: str, dtype: str = "float32", revision: str | None = None):
    with loading_errors(uri, "model"), MODEL_BUILD_LOCK:  # safetensors only: a pickled checkpoint is never loaded
        return AutoModelForCausalLM.from_pretrained(uri, dtype=torch_dtype(dtype), revision=revision,
                                                    use_safetensors=True)


def load_encoder(uri: str, dtype: str = "float32", revision: str | None = None):
    """The encoder alone: for T5-family checkpoints (mT5-xl) the decoder weights are never materialised."""
    with loading_errors(uri, "encoder"):
        config = AutoConfig.from_pretrained(uri, revision=revision)
    encoder_cls = {"t5": T5EncoderModel, "mt5": MT5EncoderModel, "umt5": UMT5EncoderModel}.get(config.model_type, AutoModel)
    with MODEL_BUILD_LOCK:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the skipped decoder weights are expected, not worth a report
        try:
            with loading_errors(uri, "encoder"):
                return encoder_cls.from_pretrained(uri, dtype=torch_dtype(dtype), revision=revision,
                                                   use_safetensors=True)
        finally:
            hf_logging.set_verbosity(verbosity)


def read_model_config(uri: str) -> dict:
    path = Path(uri) / "config.json"
    if path.exists():
        return json.loads(path.read_text())

    return AutoConfig.from_pretrained(uri).to_dict()


def check_tokenizer_matches(tokenizer, model_config: dict, tokenizer_uri: str, model_uri: str) -> None:
    """Refuse a tokenizer whose ids the model cannot embed, or whose BOS/EOS ids differ from the model's."""
    vocab = model_config.get("vocab_size")
    if vocab is not None and len(tokenizer) > vocab:
        raise InputError(
            f"tokenizer {tokenizer_uri} has {len(tokenizer)} tokens but model {model_uri} embeds only {vocab}: "
            "it is not the model's tokenizer"
        )
    for name in ("bos_token_id", "eos_token_id"):
        model_id, tok_id = model_config.get(name), getattr(tokenizer, name, None)
        if isinstance(model_id, list):
            model_id = model_id[0] if tok_id not in model_id else tok_id
        if model_id is not None and tok_id is not None and model_id != tok_id:
            raise InputError(
                f"tokenizer {tokenizer_uri} has {name}={tok_id} but model {model_uri} expects {model_id}: "
                "it is not the model's tokenizer"
            )
