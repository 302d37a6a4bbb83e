"""Instruct models evaluated as they are meant to be: each prompt rendered by the tokenizer's own chat template (as
lm-eval's --apply_chat_template does), with an optional system prompt, the assistant's turn opened."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from linguaforge.pipelines.errors import InputError


def render_chat(tokenizer, prompt: str, system_prompt: str | None = None) -> str:
    """`prompt` as the user's turn (after `system_prompt`, if any), the assistant's turn opened."""
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
        [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def chat_items(items: list[Any], generator: Any, system_prompt: str | None = None) -> list[Any]:
    """The items with their prompts rendered by `generator`'s tokenizer's chat template; the generator then adds no
    special tokens of its own (the template placed them)."""
    tokenizer = getattr(generator, "tokenizer", None)
    if not hasattr(generator, "prompt_special_tokens") or tokenizer is None:
        raise InputError(f"{type(generator).__name__}: a chat template applies to a plain causal LM's prompts only")
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(f"the tokenizer of {getattr(tokenizer, 'name_or_path', 'this model')} has no chat template: "
                         "leave apply_chat_template off for a base model")
    generator.prompt_special_tokens = False
    return [replace(item, prompt=render_chat(tokenizer, item.prompt, system_prompt)) for item in items]
