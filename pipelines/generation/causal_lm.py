"""Decoding: the model side of evaluation, as a small protocol any model can implement.

`TextGenerator.generate` turns items into output texts (greedy); `OptionScorer.option_logprobs` gives the
log-likelihood of each item's option continuations after its prompt. `HFCausalLMGenerator` implements
both for any HF causal LM; a MindMerger model (encoder + mapping + LLM, generating from `inputs_embeds`)
implements the same two methods and is scored by the same code.

Greedy generation runs in batches of prompts sorted by token length (little padding), left-padded, with
the KV cache, per-benchmark `max_new_tokens` and stop strings; a row leaves its batch as soon as it has
finished (EOS or a stop string), so the remaining steps compute the rows still going only; outputs are cut at
EOS and at the first stop string. Results do not depend on the batch size: padding is masked and positions
come from the mask, so a padded row computes what it computes alone (up to float rounding, which greedy
argmax absorbs; the tests compare with one prompt at a time). Three things keep it cheap: the prompt tokens
that every row of a batch shares (a preset's instruction) are computed once and their KV cache repeated; the
KV cache is written into a preallocated buffer (`growing_cache`) instead of being concatenated afresh at every
step (which copies the whole cache of every layer, every token); and one-token steps run attention as two
matmuls (`decode_attention`), which on CPU is faster than SDPA's kernels for a single query.

Log-likelihood scoring is one forward pass per option set: a row holds the prompt followed by all its
options, and a 4D attention mask lets each option see the prompt and itself only (positions restart after
the prompt), so an item with 5 short options costs about one forward pass over prompt + longest option.
Attention kernels that ignore custom masks (flash attention) fall back to reading the prompt once and
the options as a batch on its repeated KV cache.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.faults import fault_point, simulated_oom
from linguaforge.pipelines.generation.base import (  # noqa: F401 - the protocols are re-exported
    BatchedGenerator,
    GenerationItem,
    OptionScorer,
    TextGenerator,
    batch_size_for,
    cut_at_stop,
    stop_in_tail,
)
from linguaforge.pipelines.generation.greedy import greedy_loop
from linguaforge.pipelines.generation.llama_decoder import LlamaDecoder
from linguaforge.pipelines.generation.llama_decoder import unsupported as llama_unsupported
from linguaforge.pipelines.interrupt import check_stop
from linguaforge.pipelines.threads import intra_op_threads

DECODE_ATTENTION = "linguaforge_sdpa_decode"


def _one_query_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention for a step that adds one token per row: two small matmuls and a softmax. On CPU this is 2-4x
    faster than `scaled_dot_product_attention`, whose kernels are built for many queries (bench: 0.84 against
    2.0 ms for 64 rows x 8 heads over 100 cached tokens). Anything else (prefill, dropout, soft-capping,
    position biases, attention weights asked for) goes to transformers' own SDPA function, unchanged."""
    special = dropout or kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None \
        or kwargs.get("s_aux") is not None or kwargs.get("output_attentions")
    if query.shape[2] != 1 or special:  # imported here, off the per-token path
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    # grouped-query attention: the query heads that share a KV head become that head's rows (no repeated KV)
    q = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(q, key.transpose(2, 3)) * (scaling if scaling is not None else dim ** -0.5)
    if attention_mask is not None:  # SDPA's mask: boolean (True = may attend) or additive, (B, 1|H, 1, L)
        mask = attention_mask[:, :, -1:, :].reshape(batch, -1, 1, key.shape[2])
        mask = mask if mask.shape[1] == 1 else mask.reshape(batch, kv_heads, heads // kv_heads, key.shape[2])
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool \
            else scores + mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(probs, value).reshape(batch, heads, 1, dim)
    return out.transpose(1, 2), None  # (B, 1, H, D), as every transformers attention function returns


@functools.cache
def _register_decode_attention() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(DECODE_ATTENTION, _one_query_attention)
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)  # masks built exactly as for SDPA
    return DECODE_ATTENTION


@contextmanager
def decode_attention(model):
    """Within the block, a model that uses SDPA attention runs `_one_query_attention` instead (which hands every
    call but one-token steps back to SDPA); other implementations (eager, flash) are left as they are."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) == DECODE_ATTENTION:  # already on (concurrent streams)
        yield
        return
    switchable = getattr(model, "_can_set_attn_implementation", None)  # transformers' own test, else it warns
    if getattr(config, "_attn_implementation", None) != "sdpa" or switchable is None or not switchable():
        yield
        return
    model.set_attn_implementation(_register_decode_attention())
    try:
        yield
    finally:
        model.set_attn_implementation("sdpa")


@dataclass
class Prefill:
    """A batch after its prompts were computed: each row's last-position `logits`, the KV `cache`, the attention
    `mask` so far and each row's last position."""

    logits: torch.Tensor
    cache: Any
    mask: torch.Tensor
    positions: torch.Tensor


def continue_greedy(model, prefill: Prefill, max_new_tokens: int, eos_ids: Sequence[int],
                    stopped: Callable[[list[int]], bool] | None, cache_kwarg: str = "cache") -> list[list[int]]:
    """Greedy decoding after a prefill, where a row leaves the batch as soon as it is done (EOS, or `stopped` on
    its tokens so far): later steps compute only the rows still going. A row computes what it computes alone (its
    padding is masked, its positions come from its mask), so a row leaving changes no other row. Returns each
    row's new tokens, EOS excluded."""
    cache, mask, positions = prefill.cache, prefill.mask, prefill.positions

    def advance(chosen: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        nonlocal mask, positions
        if keep is not None:
            cache.batch_select_indices(keep)
            mask, positions = mask[keep], positions[keep]
        mask = torch.cat([mask, mask.new_ones((len(chosen), 1))], dim=1)
        positions = positions + 1
        return model(input_ids=chosen[:, None], attention_mask=mask, position_ids=positions[:, None],
                     use_cache=True, **{cache_kwarg: cache}).logits[:, -1]

    with decode_attention(model):
        return greedy_loop(prefill.logits, max_new_tokens, eos_ids, stopped, advance)


class _GrowingLayer:
    """One layer's KV cache in a buffer with spare room at the end: a new token is copied into place and the
    layer hands out a view of the filled part, instead of concatenating a new tensor at every step (as
    transformers' DynamicLayer does). The buffer doubles when full."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self._k = self._v = None
            self._length = 0
        new = key_states.shape[-2]
        if self._k is None or self._length + new > self._k.shape[-2]:
            self._reserve(max(2 * self._length, self._length + new + 64), key_states, value_states)
        self._k[..., self._length:self._length + new, :].copy_(key_states)
        self._v[..., self._length:self._length + new, :].copy_(value_states)
        self._length += new
        self.keys, self.values = self._k[..., :self._length, :], self._v[..., :self._length, :]
        return self.keys, self.values

    def _reserve(self, capacity: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        k = key_states.new_empty((*key_states.shape[:-2], capacity, key_states.shape[-1]))
        v = value_states.new_empty((*value_states.shape[:-2], capacity, value_states.shape[-1]))
        if self._length:
            k[..., :self._length, :], v[..., :self._length, :] = self.keys, self.values
        self._k, self._v = k, v

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized and self._length:
            self._k, self._v = self._k[indices], self._v[indices]
            self.keys, self.values = self._k[..., :self._length, :], self._v[..., :self._length, :]

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized and self._length:
            self._k, self._v = self._k.repeat_interleave(repeats, 0), self._v.repeat_interleave(repeats, 0)
            self.keys, self.values = self._k[..., :self._length, :], self._v[..., :self._length, :]

    def crop(self, tokens_to_remove: int) -> None:
        if self.is_initialized and tokens_to_remove < 0:
            self._length = max(0, self._length + tokens_to_remove)
            self.keys, self.values = self._k[..., :self._length, :], self._v[..., :self._length, :]


@functools.cache
def _growing_layer_class() -> type:
    # imported on first use: importing decoding does not import transformers
    from transformers.cache_utils import DynamicLayer

    return type("GrowingLayer", (_GrowingLayer, DynamicLayer), {})


def growing_cache():
    """A transformers KV cache whose layers write into preallocated buffers (`_GrowingLayer`); everything else
    (mask sizes, sequence length) is transformers' DynamicLayer behaviour."""
    from transformers.cache_utils import Cache

    return Cache(layer_class_to_replicate=_growing_layer_class())


def _eos_ids(folder: Path, config: dict) -> list[int]:
    """The EOS ids transformers' generation config would hold: generation_config.json's, else the config's."""
    generation = folder / "generation_config.json"
    eos = json.loads(generation.read_text(encoding="utf-8")).get("eos_token_id") if generation.is_file() else None
    eos = config.get("eos_token_id") if eos is None else eos
    return list(eos) if isinstance(eos, list | tuple) else [eos]


def shared_prefix(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every row has in common, leaving each row at least one token of its own (the
    prefill must end on a row's own last token)."""
    limit = min(len(r) for r in rows) - 1
    n = 0
    while n < limit and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


def default_streams(device: torch.device) -> int:
    """Batches worth decoding at once in a process of their own: two on a CPU with two threads or more, else
    one. A one-token step is a few short operations with Python between them, during which the step's other
    cores wait; a second batch decoding beside it fills them. On a GPU the batches would queue on one device
    stream, so one."""
    return 2 if device.type == "cpu" and torch.get_num_threads() >= 2 else 1


def in_streams(model, decode: Callable[[list[int]], list[list[int]]], batches: list[list[int]],
               streams: int) -> list[list[list[int]]]:
    """`decode` over `batches`, `streams` at a time in threads of their own, each with an equal share of the
    intra-op threads; results in the batches' order. A batch computes the same whether it runs alone or beside
    another (the threads share the read-only weights; each batch has its own KV cache). The share is set with
    `torch.set_num_threads`, which is the process's: torch threads started meanwhile elsewhere keep it."""
    streams = min(streams, len(batches))
    if streams <= 1:
        return [decode(batch) for batch in batches]

    def in_inference_mode(batch: list[int]) -> list[list[int]]:
        with torch.inference_mode():  # a thread-local mode: each stream enters it
            return decode(batch)

    # the attention switch is shared model state: set once here, not by each stream
    with decode_attention(model), intra_op_threads(torch.get_num_threads() // streams), \
            ThreadPoolExecutor(streams, thread_name_prefix="decode") as pool:
        return list(pool.map(in_inference_mode, batches))


class HFCausalLMGenerator(BatchedGenerator):
    """Any HF causal LM + its tokenizer, batched. A tokenizer without a pad token is fine: padded
    positions are masked, so any id serves (EOS, as MindMerger does, else 0).

    `model` is the model, or a function that loads it on first use: `from_pretrained` gives a plain Llama
    checkpoint on CPU a `LlamaDecoder` for generation, and transformers' model is then loaded only if
    something else needs it (option scoring). `streams` > 1 decodes that many batches at once (`in_streams`),
    which sets the process's intra-op thread count meanwhile: ask for it in a process of its own."""

    def __init__(self, model, tokenizer, batch_size: int | str = 8, device: str | torch.device | None = None,
                 streams: int = 1, decoder: Callable[[], LlamaDecoder] | None = None,
                 model_eos_ids: Sequence[int] = ()):
        if streams < 1:
            raise InputError(f"streams must be at least 1, got {streams}")
        self.tokenizer = tokenizer
        self._model, self._load_model = (model, None) if isinstance(model, torch.nn.Module) else (None, model)
        self._decoder, self._load_decoder = None, decoder
        self.device = torch.device(device) if device is not None else (
            next(model.parameters()).device if self._model is not None else torch.device("cpu"))
        self.batch_size = batch_size_for(batch_size, self.device)
        self.streams = streams
        self.prompt_special_tokens = True  # False once prompts come rendered by a chat template (chat.py)
        if self._model is not None:
            self._prepare(self._model, device)
            gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
            model_eos_ids = gen_eos if isinstance(gen_eos, list | tuple) else [gen_eos]
        self.eos_ids = sorted(e for e in {tokenizer.eos_token_id, *model_eos_ids} if e is not None)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)

    def _prepare(self, model, device) -> None:
        self._model = model.eval()
        if device is not None:
            self._model.to(self.device)
        # transformers renamed `past_key_values` to `cache` during v5; accept models of either side
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._has_logits_to_keep = "logits_to_keep" in params

    @property
    def model(self):
        """transformers' model, loaded on first use when it was given as a loader."""
        if self._model is None:
            self._prepare(self._load_model(), self.device)
        return self._model

    def _llama_decoder(self) -> LlamaDecoder | None:
        if self._decoder is None and self._load_decoder is not None:
            self._decoder = self._load_decoder()
        return self._decoder

    @classmethod
    def from_pretrained(cls, uri: str, dtype: str = "float32", batch_size: int = 8,
                        device: str | None = None, tokenizer_uri: str | None = None,
                        revision: str | None = None, streams: int = 1) -> HFCausalLMGenerator:
        """Load a model (HF id, folder or fsspec URL) and its tokenizer the way the pipeline does. A local
        plain Llama checkpoint (`llama_decoder.unsupported`) decoded in fp32 on CPU generates with
        `LlamaDecoder`, and transformers' model is loaded only when option scoring needs it."""
        from linguaforge.pipelines.loading import load_tokenizer, loading_errors
        from linguaforge.pipelines.locations import resolve_model_dir

        local = resolve_model_dir(uri)
        tokenizer = load_tokenizer(resolve_model_dir(tokenizer_uri) if tokenizer_uri else local, revision=revision)

        def load_model():
            from linguaforge.pipelines.models import load_causal_lm

            return load_causal_lm(local, dtype=dtype, revision=revision)

        config = Path(local) / "config.json"
        if dtype != "float32" or str(device or "cpu") != "cpu" or revision is not None or not config.is_file():
            return cls(load_model(), tokenizer, batch_size, device, streams)
        with loading_errors(local, "model"):
            llama = json.loads(config.read_text(encoding="utf-8"))
        if llama_unsupported(llama) is not None or not any(Path(local).glob("*.safetensors")):
            return cls(load_model(), tokenizer, batch_size, device, streams)

        def load_decoder() -> LlamaDecoder:
            with loading_errors(local, "model"):
                return LlamaDecoder.from_folder(local)

        return cls(load_model, tokenizer, batch_size, device, streams, decoder=load_decoder,
                   model_eos_ids=_eos_ids(Path(local), llama))

    # -- generation -------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, items: Sequence[GenerationItem], max_new_tokens: int, stop: Sequence[str] = ()) -> list[str]:
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        stop = [s for s in stop if s]
        prompts = self._encode([it.prompt for it in items], "prompt", items)
        batches = self._batches([len(p) for p in prompts])
        outputs: list[str | None] = [None] * len(items)
        if self._llama_decoder() is None:  # whichever decodes is loaded once, before the streams start
            self.model  # noqa: B018

        def rows(batch: list[int]) -> list[list[int]]:
            simulated_oom("generate", len(batch))  # tests: a GPU's memory limit on any machine
            return self._greedy([prompts[i] for i in batch], max_new_tokens, stop)

        def decode(batch: list[int]) -> list[list[int]]:
            fault_point("generate.batch")
            return self._fitting(rows, batch, "generating")

        decoded = in_streams(self._model, decode, batches, self.streams)
        for batch, rows in zip(batches, decoded, strict=True):
            for i, tokens in zip(batch, rows, strict=True):
                outputs[i] = self._finish(tokens, stop)
        return outputs  # type: ignore[return-value]

    def _greedy(self, prompts: list[list[int]], max_new_tokens: int, stop: Sequence[str]) -> list[list[int]]:
        shared = shared_prefix(prompts) if len(prompts) > 1 else 0
        stopped = (lambda tokens: self._stopped(tokens, stop)) if stop else None
        if self._llama_decoder() is not None:
            return self._decoder.greedy(prompts, shared, max_new_tokens, self.eos_ids, stopped)
        cache = growing_cache()
        if shared:  # the tokens every prompt starts with, computed once, then their cache repeated per row
            self.model(input_ids=torch.tensor([prompts[0][:shared]], device=self.device), use_cache=True,
                       **{self._cache_kwarg: cache}, **self._keep_kwarg(1))
            cache.batch_repeat_interleave(len(prompts))
        # the rest of each prompt, left-padded after the shared part: [shared][padding][own tokens]
        ids, own = self._left_pad([p[shared:] for p in prompts])
        mask = torch.cat([own.new_ones((len(prompts), shared)), own], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions[:, shared:], use_cache=True,
                         **{self._cache_kwarg: cache}, **self._keep_kwarg(1))
        return continue_greedy(self.model, Prefill(out.logits[:, -1], cache, mask, positions[:, -1]), max_new_tokens,
                               self.eos_ids, stopped, self._cache_kwarg)

    def _stopped(self, tokens: list[int], stop: Sequence[str]) -> bool:
        return stop_in_tail(self.tokenizer, tokens, stop)

    def _finish(self, tokens: list[int], stop: Sequence[str]) -> str:
        for j, t in enumerate(tokens):
            if t in self.eos_ids:
                tokens = tokens[:j]
                break
        text = self.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return cut_at_stop(text, stop)

    # -- log-likelihood ---------------------------------------------------------------------------
    @torch.inference_mode()
    def option_logprobs(self, items: Sequence[GenerationItem]) -> list[list[float]]:
        prompts = self._encode([it.prompt for it in items], "prompt", items)
        options = []
        for it in items:
            if not it.continuations:
                raise InputError(f"item {it.id} ({it.benchmark}/{it.language}) has no options to score")
            ids = self.tokenizer(list(it.continuations), add_special_tokens=False)["input_ids"]
            for text, tok in zip(it.continuations, ids, strict=True):
                if not tok:
                    raise InputError(f"item {it.id}: option {text!r} encodes to no tokens")
            options.append(ids)
        scores: list[list[float] | None] = [None] * len(items)
        # items of one batch must have the same number of options (the KV cache is repeated per option)
        by_count: dict[int, list[int]] = {}
        for i, opts in enumerate(options):
            by_count.setdefault(len(opts), []).append(i)
        for indices in by_count.values():
            for sub in self._batches([len(prompts[i]) for i in indices]):
                batch = [indices[j] for j in sub]
                check_stop("scoring options")
                result = self._fitting(lambda b: self._score_rows(b, prompts, options), batch, "scoring options")
                for i, s in zip(batch, result, strict=True):
                    scores[i] = s
        return scores  # type: ignore[return-value]

    def _score_rows(self, batch: list[int], prompts: list[list[int]], options: list) -> list[list[float]]:
        simulated_oom("score", len(batch))  # tests: a GPU's memory limit on any machine
        return self._score_options([prompts[i] for i in batch], [options[i] for i in batch])

    def _score_options(self, prompts: list[list[int]], options: list[list[list[int]]]) -> list[list[float]]:
        if getattr(self.model.config, "_attn_implementation", "eager") in ("eager", "sdpa"):
            return self._score_options_packed(prompts, options)
        return self._score_options_cached(prompts, options)  # kernels that ignore custom masks (flash attention)

    def _score_options_packed(self, prompts: list[list[int]], options: list[list[list[int]]]) -> list[list[float]]:
        """One forward pass per batch: each row is prompt + option 1 + ... + option K, and a 4D mask lets
        every option see the prompt and itself only, with positions restarting after the prompt."""
        rows, segments, positions = [], [], []
        for prompt, opts in zip(prompts, options, strict=True):
            rows.append(prompt + [t for o in opts for t in o])
            segments.append([0] * len(prompt) + [k + 1 for k, o in enumerate(opts) for _ in o])
            positions.append(list(range(len(prompt))) + [len(prompt) + j for o in opts for j in range(len(o))])
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        seg = torch.full((len(rows), width), -1, dtype=torch.long)  # -1 = padding
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        for b, (r, g, p) in enumerate(zip(rows, segments, positions, strict=True)):
            ids[b, width - len(r):], seg[b, width - len(r):], pos[b, width - len(r):] = (
                torch.tensor(r), torch.tensor(g), torch.tensor(p))
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        # a query sees earlier keys of its own segment and of the prompt; padding sees only padding (no empty
        # softmax rows, hence no NaN), and no real token ever sees padding
        allowed = causal & ((seg[:, None, :] == seg[:, :, None]) | ((seg[:, None, :] == 0) & (seg[:, :, None] > 0)))
        dtype = next(self.model.parameters()).dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
        keep = max(len(r) - len(p) for r, p in zip(rows, prompts, strict=True)) + 1
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=pos.to(self.device), **self._keep_kwarg(keep))
        logits = out.logits[:, -keep:]  # positions width-keep .. width-1
        # which logits row predicts each option token: the last prompt token for an option's first token,
        # else the option's previous token
        pick_b, pick_pos, pick_tok, owner = [], [], [], []
        for b, (prompt, opts) in enumerate(zip(prompts, options, strict=True)):
            start = width - len(rows[b])  # where the row's prompt starts
            at = start + len(prompt)
            for k, o in enumerate(opts):
                for j, t in enumerate(o):
                    pick_b.append(b)
                    pick_pos.append((start + len(prompt) - 1 if j == 0 else at + j - 1) - (width - keep))
                    pick_tok.append(t)
                    owner.append((b, k))
                at += len(o)
        chosen = logits[torch.tensor(pick_b), torch.tensor(pick_pos)].float()
        token_lp = torch.log_softmax(chosen, dim=-1).gather(1, torch.tensor(pick_tok, device=chosen.device)[:, None])
        sums = [[0.0] * len(opts) for opts in options]
        for (b, k), lp in zip(owner, token_lp.squeeze(1).tolist(), strict=True):
            sums[b][k] += lp
        return sums

    def _score_options_cached(self, prompts: list[list[int]], options: list[list[list[int]]]) -> list[list[float]]:
        """The prompt once with its KV cache, then all options as one batch on the repeated cache."""
        k = len(options[0])
        input_ids, mask = self._left_pad(prompts)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         **self._keep_kwarg(1))
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1).repeat_interleave(k, dim=0)  # (B*K, V)
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        cache.batch_repeat_interleave(k)
        flat = [o for opts in options for o in opts]
        width = max(len(o) for o in flat)
        opt_ids = torch.full((len(flat), width), self.pad_id, dtype=torch.long)
        opt_mask = torch.zeros((len(flat), width), dtype=torch.long)
        for r, o in enumerate(flat):
            opt_ids[r, : len(o)] = torch.tensor(o)
            opt_mask[r, : len(o)] = 1
        opt_ids, opt_mask = opt_ids.to(self.device), opt_mask.to(self.device)
        prompt_len = mask.sum(-1).repeat_interleave(k)
        out = self.model(input_ids=opt_ids, attention_mask=torch.cat([mask.repeat_interleave(k, dim=0), opt_mask], 1),
                         position_ids=prompt_len[:, None] + torch.arange(width, device=self.device)[None],
                         use_cache=True, **{self._cache_kwarg: cache})
        token_lp = torch.empty(opt_ids.shape, dtype=torch.float32, device=self.device)
        token_lp[:, 0] = first.gather(1, opt_ids[:, :1]).squeeze(1)
        if width > 1:
            rest = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
            token_lp[:, 1:] = rest.gather(2, opt_ids[:, 1:, None]).squeeze(2)
        sums = (token_lp * opt_mask).sum(-1).view(len(options), k)
        return sums.tolist()

    def _keep_kwarg(self, keep: int) -> dict:
        """Ask for the last `keep` positions' logits only, where the model supports it (vocabularies are big)."""
        return {"logits_to_keep": keep} if self._has_logits_to_keep else {}

    # -- helpers ----------------------------------------------------------------------------------
    def _encode(self, texts: list[str], what: str, items: Sequence[GenerationItem]) -> list[list[int]]:
        # a prompt rendered by the tokenizer's chat template already holds its special tokens
        ids = self.tokenizer(texts, add_special_tokens=self.prompt_special_tokens)["input_ids"]
        for it, tok in zip(items, ids, strict=True):
            if not tok:
                raise InputError(f"item {it.id} ({it.benchmark}/{it.language}): the {what} encodes to no tokens")
        return ids

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, width - len(s):] = torch.tensor(s)
            mask[r, width - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)
