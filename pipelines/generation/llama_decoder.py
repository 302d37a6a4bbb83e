"""Greedy decoding of plain Llama checkpoints on CPU, straight from their safetensors, without transformers'
model classes.

Why: on CPU a batched one-token step of a small model is a few short matrix products with framework code
between them, and importing transformers' modelling stack (torch.distributed.tensor, torch._dynamo, sympy)
takes about 2.3 s before the first token. This decoder computes what `LlamaForCausalLM` computes, operation
for operation (RMSNorm in fp32, rotary embedding, SDPA for the prompt), with one difference in how, not what:
the prompt tokens that every row of a batch shares are kept once, and a one-token step reads their keys and
values once for all rows instead of once per row. The tests hold it to transformers' logits and outputs.

It covers `model_type: llama` with the default rotary embedding, no attention or MLP biases, SiLU, and fp32
compute; `unsupported` names the first thing a checkpoint has that it does not cover, and the caller then
decodes with transformers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from linguaforge.pipelines.generation.greedy import greedy_loop

LAYER_WEIGHTS = ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def unsupported(config: dict) -> str | None:
    """Why this decoder cannot run a checkpoint of this config, or None when it can."""
    ropes = [config.get("rope_parameters") or {}, config.get("rope_scaling") or {}]  # transformers 5, and before
    rope = next((r for r in ropes if r.get("rope_type", r.get("type", "default")) != "default"), {})
    checks = [
        (config.get("model_type") == "llama", f"model_type {config.get('model_type')!r} is not 'llama'"),
        (config.get("hidden_act", "silu") == "silu", f"hidden_act {config.get('hidden_act')!r}"),
        (not config.get("attention_bias") and not config.get("mlp_bias"), "biases in attention or MLP"),
        (rope.get("rope_type", rope.get("type", "default")) == "default", f"rotary embedding {rope}"),
        (config.get("pretraining_tp", 1) == 1, "pretraining_tp > 1"),
    ]
    return next((why for ok, why in checks if not ok), None)


class LlamaDecoder:
    """A Llama's weights (fp32) and greedy decoding over them. Read-only once built: batches may decode on
    several threads at once, each with its own cache."""

    def __init__(self, config: dict, weights: dict[str, torch.Tensor]):
        self.heads = config["num_attention_heads"]
        self.kv_heads = config.get("num_key_value_heads") or self.heads
        self.head_dim = config.get("head_dim") or config["hidden_size"] // self.heads
        self.eps = config.get("rms_norm_eps", 1e-6)
        rope = config.get("rope_parameters") or {}
        theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
        # as transformers computes it (`compute_default_rope_parameters`)
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.int64).float() / self.head_dim))
        self.layers = [{name: weights[f"model.layers.{i}.{name}.weight"].float() for name in LAYER_WEIGHTS}
                       for i in range(config["num_hidden_layers"])]
        self.embed = weights["model.embed_tokens.weight"].float()
        self.norm = weights["model.norm.weight"].float()
        self.head = weights["lm_head.weight"].float() if "lm_head.weight" in weights else self.embed

    @classmethod
    def from_folder(cls, folder: str | Path) -> LlamaDecoder | None:
        """The decoder for a local checkpoint folder, or None when its config is not covered or it has no
        safetensors weights."""
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        files = sorted(folder.glob("*.safetensors"))
        if unsupported(config) is not None or not files:
            return None
        weights: dict[str, torch.Tensor] = {}
        for path in files:
            weights.update(load_file(str(path)))
        return cls(config, weights)

    # -- the model --------------------------------------------------------------------------------
    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def _rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for positions (B, T), shaped (B, 1, T, head_dim) to broadcast over heads."""
        freqs = positions[..., None].float() * self.inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos()[:, None], angles.sin()[:, None]

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, cache: _SharedPrefixCache) -> torch.Tensor:
        """Hidden states (B, T, hidden) after the final norm; `cache` takes each layer's new keys and values."""
        batch, length = ids.shape
        x = F.embedding(ids, self.embed)
        cos, sin = self._rotary(positions)
        for i, w in enumerate(self.layers):
            h = self._rms_norm(x, w["input_layernorm"])
            q = F.linear(h, w["self_attn.q_proj"]).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
            k = F.linear(h, w["self_attn.k_proj"]).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
            v = F.linear(h, w["self_attn.v_proj"]).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
            attended = cache.attend(i, self._rotate(q, cos, sin), self._rotate(k, cos, sin), v)
            x = x + F.linear(attended.transpose(1, 2).reshape(batch, length, -1), w["self_attn.o_proj"])
            h = self._rms_norm(x, w["post_attention_layernorm"])
            x = x + F.linear(F.silu(F.linear(h, w["mlp.gate_proj"])) * F.linear(h, w["mlp.up_proj"]),
                             w["mlp.down_proj"])
        return self._rms_norm(x, self.norm)

    def _next_logits(self, ids: torch.Tensor, positions: torch.Tensor, cache: _SharedPrefixCache) -> torch.Tensor:
        return F.linear(self._forward(ids, positions, cache)[:, -1], self.head)

    # -- decoding ---------------------------------------------------------------------------------
    def prefill(self, prompts: Sequence[Sequence[int]], shared: int, room: int
                ) -> tuple[torch.Tensor, _SharedPrefixCache, torch.Tensor]:
        """The prompts' first `shared` tokens (the same in every row) once, then each row's own tokens,
        left-padded. Returns the next-token logits, the cache (with `room` free places per row) and each row's
        last position."""
        cache = _SharedPrefixCache(self, len(prompts), max(len(p) for p in prompts) - shared + room)
        if shared:
            cache.filling_prefix = True
            self._forward(torch.tensor([list(prompts[0][:shared])]), torch.arange(shared)[None], cache)
            cache.filling_prefix = False
        own = [list(p[shared:]) for p in prompts]
        width = max(len(o) for o in own)
        ids = torch.zeros((len(own), width), dtype=torch.long)
        for row, tokens in enumerate(own):
            ids[row, width - len(tokens):] = torch.tensor(tokens)
            cache.valid[row, width - len(tokens):width] = True
        positions = shared + cache.valid[:, :width].long().cumsum(-1) - 1
        logits = self._next_logits(ids, positions.clamp(min=0), cache)
        return logits, cache, positions[:, -1]

    def greedy(self, prompts: Sequence[Sequence[int]], shared: int, max_new_tokens: int, eos_ids: Sequence[int],
               stopped: Callable[[list[int]], bool] | None) -> list[list[int]]:
        """Each prompt's new tokens (EOS excluded), greedy; a row leaves the batch once it meets EOS or
        `stopped` says so (`greedy.greedy_loop`, as `decoding.continue_greedy` with transformers)."""
        logits, cache, positions = self.prefill(prompts, shared, max_new_tokens)

        def advance(chosen: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
            nonlocal positions
            if keep is not None:
                cache.keep_rows(keep)
                positions = positions[keep]
            positions = positions + 1
            return self._next_logits(chosen[:, None], positions[:, None], cache)

        return greedy_loop(logits, max_new_tokens, eos_ids, stopped, advance)


class _SharedPrefixCache:
    """Keys and values of one batch: the shared prefix once per layer, (kv_heads, P, head_dim), and each row's
    own tokens in a preallocated buffer, (B, kv_heads, room, head_dim), with a mask of the filled places
    (left padding stays masked)."""

    def __init__(self, model: LlamaDecoder, batch: int, room: int):
        self.model = model
        shape = (batch, model.kv_heads, room, model.head_dim)
        self.keys = [torch.empty(shape) for _ in model.layers]
        self.values = [torch.empty(shape) for _ in model.layers]
        self.prefix_keys: list[torch.Tensor | None] = [None] * len(model.layers)
        self.prefix_values: list[torch.Tensor | None] = [None] * len(model.layers)
        self.valid = torch.zeros((batch, room), dtype=torch.bool)
        self.length = 0  # own places filled (padding included)
        self.filling_prefix = False

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention output (B, heads, T, head_dim) of the new tokens' queries over everything cached."""
        scale = self.model.head_dim ** -0.5
        if self.filling_prefix:  # one row: the tokens every row shares
            self.prefix_keys[layer], self.prefix_values[layer] = k[0], v[0]
            return F.scaled_dot_product_attention(q, _repeat_heads(k, q), _repeat_heads(v, q), is_causal=True,
                                                  scale=scale)
        start, new = self.length, q.shape[2]
        self.keys[layer][:, :, start:start + new] = k
        self.values[layer][:, :, start:start + new] = v
        if layer == len(self.keys) - 1:
            self.length += new
        if new > 1:
            return self._attend_prompt(layer, q, start + new)
        self.valid[:, start] = True
        return self._attend_step(layer, q, start + 1, scale)

    def _attend_prompt(self, layer: int, q: torch.Tensor, end: int) -> torch.Tensor:
        """The rows' own prompt tokens: causal over themselves, padding masked, all of the prefix visible. A
        padding query also sees itself: its output is never used, and no row is then left with nothing to attend
        to, which SDPA's kernels have not all answered alike (zeros or NaN)."""
        batch, _, new, _ = q.shape
        keys, values = self.keys[layer][:, :, :end], self.values[layer][:, :, :end]
        own = torch.ones((new, new), dtype=torch.bool).tril()[None, None] & self.valid[:, None, None, :end]
        own = own | torch.eye(new, dtype=torch.bool)
        prefix = self.prefix_keys[layer]
        if prefix is not None:
            keys = torch.cat([prefix[None].expand(batch, -1, -1, -1), keys], dim=2)
            values = torch.cat([self.prefix_values[layer][None].expand(batch, -1, -1, -1), values], dim=2)
            own = torch.cat([own.new_ones((batch, 1, new, prefix.shape[1])), own.expand(batch, 1, new, new)], -1)
        return F.scaled_dot_product_attention(q, _repeat_heads(keys, q), _repeat_heads(values, q), attn_mask=own,
                                              scale=self.model.head_dim ** -0.5)

    def _attend_step(self, layer: int, q: torch.Tensor, end: int, scale: float) -> torch.Tensor:
        """One new token per row. Grouped-query heads become rows of their KV head; the prefix's scores are one
        product per KV head over all rows' queries, so its keys and values are read once, not once per row."""
        batch, heads, _, dim = q.shape
        kv_heads, group = self.model.kv_heads, heads // self.model.kv_heads
        q = q.reshape(batch, kv_heads, group, dim)
        scores = torch.matmul(q, self.keys[layer][:, :, :end].transpose(2, 3)) * scale
        scores = scores.masked_fill(~self.valid[:, None, None, :end], torch.finfo(scores.dtype).min)
        prefix = self.prefix_keys[layer]
        if prefix is None:
            probs = torch.softmax(scores, dim=-1)
            return torch.matmul(probs, self.values[layer][:, :, :end]).reshape(batch, heads, 1, dim)
        by_head = q.permute(1, 0, 2, 3).reshape(kv_heads, batch * group, dim)
        prefix_scores = (torch.matmul(by_head, prefix.transpose(1, 2)) * scale).reshape(kv_heads, batch, group, -1)
        probs = torch.softmax(torch.cat([prefix_scores.permute(1, 0, 2, 3), scores], dim=-1), dim=-1)
        width = prefix.shape[1]
        out = torch.matmul(probs[..., width:], self.values[layer][:, :, :end])
        from_prefix = torch.matmul(probs[..., :width].permute(1, 0, 2, 3).reshape(kv_heads, batch * group, width),
                                   self.prefix_values[layer])
        out = out + from_prefix.reshape(kv_heads, batch, group, dim).permute(1, 0, 2, 3)
        return out.reshape(batch, heads, 1, dim)

    def keep_rows(self, index: torch.Tensor) -> None:
        self.keys = [k[index] for k in self.keys]
        self.values = [v[index] for v in self.values]
        self.valid = self.valid[index]


def _repeat_heads(kv: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Keys or values (B, kv_heads, L, D) repeated to the query's heads, as transformers' `repeat_kv`."""
    group = q.shape[1] // kv.shape[1]
    return kv if group == 1 else kv.repeat_interleave(group, dim=1)
