"""MindMerger behind the benchmark evaluation's model interface (pipelines/generation/causal_lm.py).

`MindMergerGenerator` implements `TextGenerator.generate` and `OptionScorer.option_logprobs`, so
`score_unit` scores a MindMerger model with exactly the code that scores a plain LLM: the same items,
prompts, stop strings, answer extraction and scoring rules. The encoder reads `item.source_text` (math:
the raw question; classification: the templated one), the LLM reads `item.prompt` after
[BOS][mapped source][boundary].

Generation is greedy with the KV cache, prefilled from `inputs_embeds`, in batches of items sorted by length
and left-padded (positions come from the mask, so a padded row computes what it computes alone), each row
leaving its batch once it has finished (the loop plain LLMs use), cut at EOS and at the first stop string. No autograd anywhere (inference mode).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.faults import simulated_oom
from linguaforge.pipelines.generation.base import (
    BatchedGenerator,
    GenerationItem,
    batch_size_for,
    cut_at_stop,
    stop_in_tail,
)
from linguaforge.pipelines.generation.causal_lm import Prefill, continue_greedy, growing_cache
from linguaforge.pipelines.interrupt import check_stop
from linguaforge.pipelines.mindmerger.data import Example, collate
from linguaforge.pipelines.mindmerger.model import MindMergerModel


class MindMergerGenerator(BatchedGenerator):
    """The generator of a MindMerger model: the batching of every generator (generation/base.py), the greedy loop
    of the causal-LM one, its prefill from the mapped encoder states."""

    def __init__(self, model: MindMergerModel, encoder_tokenizer, llm_tokenizer, batch_size: int | str = 8,
                 device: str | torch.device | None = None):
        self.model = model.train(False)
        self.encoder_tokenizer, self.tokenizer = encoder_tokenizer, llm_tokenizer
        self.device = torch.device(device) if device is not None else next(model.llm.parameters()).device
        self.batch_size = batch_size_for(batch_size, self.device)
        self.model.to(self.device)
        eos = {llm_tokenizer.eos_token_id}
        gen_eos = getattr(getattr(model.llm, "generation_config", None), "eos_token_id", None)
        eos |= set(gen_eos) if isinstance(gen_eos, list | tuple) else {gen_eos}
        self.eos_ids = sorted(e for e in eos if e is not None)
        # transformers renamed `past_key_values` to `cache` during v5; accept models of either side
        params = inspect.signature(model.llm.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    @classmethod
    def from_pretrained(cls, encoder_uri: str, llm_uri: str, mapping: str, dtype: str = "float32",
                        batch_size: int = 8, device: str | None = None, encoder_id: str | None = None,
                        llm_id: str | None = None) -> MindMergerGenerator:
        """Encoder + LLM (HF ids or folders) + a trained mapping (our folder, or an official pytorch_model.bin)."""
        from linguaforge.pipelines.mindmerger.train import ModelPair, build_model
        from linguaforge.pipelines.models import load_tokenizer

        model = build_model(ModelPair(encoder_uri, llm_uri, encoder_id, llm_id, dtype), init=mapping)
        return cls(model, load_tokenizer(encoder_uri), load_tokenizer(llm_uri), batch_size, device)

    # -- shared -------------------------------------------------------------------------------------
    def _examples(self, items: Sequence[GenerationItem]) -> list[Example]:
        sources = self.encoder_tokenizer([it.source_text for it in items], add_special_tokens=True)["input_ids"]
        prompts = self.tokenizer([it.prompt for it in items], add_special_tokens=False)["input_ids"]
        for it, src in zip(items, sources, strict=True):
            if not src:
                raise InputError(f"item {it.id} ({it.benchmark}/{it.language}): the source text encodes to no tokens")
        return [Example(list(s), list(p), [], it.language) for it, s, p in zip(items, sources, prompts, strict=True)]

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in batch.items()}

    # -- generation -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, items: Sequence[GenerationItem], max_new_tokens: int, stop: Sequence[str] = ()) -> list[str]:
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        stop = [s for s in stop if s]
        examples = self._examples(items)
        outputs: list[str | None] = [None] * len(items)
        lengths = [len(e.source_ids) + len(e.prompt_ids) for e in examples]
        def rows(batch: list[int]) -> list[str]:
            check_stop("generating")
            simulated_oom("generate", len(batch))  # tests: a GPU's memory limit on any machine
            return self._greedy([examples[i] for i in batch], max_new_tokens, stop)

        for batch in self._batches(lengths):
            for i, text in zip(batch, self._fitting(rows, batch, "MindMerger generating"), strict=True):
                outputs[i] = text
        return outputs  # type: ignore[return-value]

    def _greedy(self, examples: list[Example], max_new_tokens: int, stop: list[str]) -> list[str]:
        """Prefill from the mapped embeddings, then the shared greedy loop (rows leave as they finish)."""
        packed = self.model.pack_batch(self._to_device(collate(examples, with_targets=False)), padding_side="left")
        cache = growing_cache()
        out = self.model.llm(inputs_embeds=packed.inputs_embeds, attention_mask=packed.attention_mask,
                             position_ids=packed.position_ids, use_cache=True, **{self._cache_kwarg: cache},
                             **self._keep)
        stopped = (lambda tokens: stop_in_tail(self.tokenizer, tokens, stop)) if stop else None
        prefill = Prefill(out.logits[:, -1], cache, packed.attention_mask, packed.position_ids[:, -1])
        tokens = continue_greedy(self.model.llm, prefill, max_new_tokens, self.eos_ids, stopped, self._cache_kwarg)
        return [cut_at_stop(self._decode(t), stop) for t in tokens]

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    # -- log-likelihood -------------------------------------------------------------------------------
    @torch.inference_mode()
    def option_logprobs(self, items: Sequence[GenerationItem]) -> list[list[float]]:
        """Summed log-probability of each continuation after [BOS][mapped source][boundary][prompt]."""
        examples = self._examples(items)
        rows: list[Example] = []
        owner: list[tuple[int, int]] = []
        for i, (it, ex) in enumerate(zip(items, examples, strict=True)):
            if not it.continuations:
                raise InputError(f"item {it.id} ({it.benchmark}/{it.language}) has no options to score")
            ids = self.tokenizer(list(it.continuations), add_special_tokens=False)["input_ids"]
            for k, (text, option) in enumerate(zip(it.continuations, ids, strict=True)):
                if not option:
                    raise InputError(f"item {it.id}: option {text!r} encodes to no tokens")
                rows.append(Example(ex.source_ids, ex.prompt_ids, list(option), ex.language))
                owner.append((i, k))
        scores = [[0.0] * len(it.continuations) for it in items]
        lengths = [len(r.source_ids) + len(r.prompt_ids) + len(r.target_ids) for r in rows]
        def score(batch: list[int]) -> list[float]:
            check_stop("scoring options")
            simulated_oom("score", len(batch))
            return self.model.token_logprobs(self._to_device(collate([rows[j] for j in batch]))).tolist()

        for batch in self._batches(lengths):
            for j, value in zip(batch, self._fitting(score, batch, "MindMerger scoring options"), strict=True):
                i, k = owner[j]
                scores[i][k] = value
        return scores
