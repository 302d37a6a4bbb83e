"""The MindMerger model: frozen encoder → trainable mapping → frozen LLM.

Each example becomes one LLM input sequence

    [LLM BOS embedding][mapped encoder states][boundary][prompt embeddings][target embeddings + EOS]

where only the encoder states of real (non-pad) source tokens are mapped and placed, the boundary is a
learned vector (zero at start), and the loss is the summed next-token cross-entropy over the target
tokens and the explicitly appended EOS.

Packing: every row is gathered from one "pool" of vectors (a zero padding vector, the BOS embedding, the
boundary, the mapped source states, the LLM token embeddings) by one index tensor, and its labels are
gathered from a label pool laid out the same way by the *same* index tensor. A label therefore always
sits at the position of the embedding it belongs to, whatever the padding side or the row lengths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from linguaforge.pipelines.errors import InputError

IGNORE_INDEX = -100
_PAD, _BOS, _BOUNDARY = 0, 1, 2  # fixed pool rows; mapped states and LLM tokens follow


class MLP(nn.Module):
    """Linear(d_enc, 2·d_enc) → ReLU → Linear(2·d_enc, d_llm), as the official code names it."""

    def __init__(self, d_enc: int, d_llm: int):
        super().__init__()
        self.linear1 = nn.Linear(d_enc, 2 * d_enc)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(2 * d_enc, d_llm)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.relu(self.linear1(states)))


class Mapping(nn.Module):
    """The trainable part. Its state_dict keys are exactly the official checkpoint's:
    mlp.linear1.{weight,bias}, mlp.linear2.{weight,bias}, end_boundary ([1, 1, d_llm])."""

    def __init__(self, d_enc: int, d_llm: int, seed: int | None = None):
        super().__init__()
        self.mlp = MLP(d_enc, d_llm)
        self.end_boundary = nn.Parameter(torch.zeros(1, 1, d_llm))
        if seed is not None:
            self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int) -> None:
        """nn.Linear's own initialisation (Kaiming-uniform weights, biases uniform in ±1/√fan_in), drawn from a
        generator of the mapping's own. The process-wide generator is shared by every thread of a run, where
        another stage's `torch.manual_seed` or draw between two of these draws would change the mapping."""
        generator = torch.Generator().manual_seed(seed)  # the same draws, in the same order, as nn.Linear's
        for linear in (self.mlp.linear1, self.mlp.linear2):
            nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5), generator=generator)
            bound = 1 / math.sqrt(linear.in_features)
            nn.init.uniform_(linear.bias, -bound, bound, generator=generator)

    @property
    def dims(self) -> tuple[int, int]:
        return self.mlp.linear1.in_features, self.mlp.linear2.out_features


def encoder_dim(encoder: nn.Module) -> int:
    """Width of the encoder's output states (T5: d_model; BERT/XLM-R: hidden_size)."""
    config = encoder.config
    dim = getattr(config, "d_model", None) or getattr(config, "hidden_size", None)
    if dim is None:
        raise InputError(f"encoder {type(encoder).__name__}: its config has neither d_model nor hidden_size")
    return int(dim)


def llm_dim(llm: nn.Module) -> int:
    """Width of the LLM's input embeddings: the space the mapping writes into."""
    return int(llm.get_input_embeddings().embedding_dim)


@dataclass
class Packed:
    inputs_embeds: torch.Tensor  # [B, W, d_llm]
    attention_mask: torch.Tensor  # [B, W] 1 = real
    position_ids: torch.Tensor  # [B, W] counted over real positions only
    labels: torch.Tensor  # [B, W] token id at target positions, IGNORE_INDEX elsewhere
    index: torch.Tensor  # [B, W] the pool rows the sequence was gathered from (for tests and debugging)


class MindMergerModel(nn.Module):
    """Encoder and LLM frozen (no gradients, eval mode: no dropout, so cached encoder states stay valid);
    only `mapping` trains. `forward(**batch)` returns the summed target loss of a micro-batch."""

    def __init__(self, encoder: nn.Module, llm: nn.Module, bos_id: int, mapping: Mapping | None = None,
                 padding_side: str = "right"):
        super().__init__()
        if bos_id is None:
            raise InputError("the LLM tokenizer has no BOS token: MindMerger starts every sequence with one")
        if padding_side not in ("left", "right"):
            raise InputError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.encoder, self.llm = encoder, llm
        for p in [*encoder.parameters(), *llm.parameters()]:
            p.requires_grad_(False)
        self.d_enc, self.d_llm = encoder_dim(encoder), llm_dim(llm)
        self.mapping = mapping if mapping is not None else Mapping(self.d_enc, self.d_llm)
        if self.mapping.dims != (self.d_enc, self.d_llm):
            raise InputError(f"mapping maps {self.mapping.dims[0]} → {self.mapping.dims[1]}, but the encoder gives "
                             f"{self.d_enc} and the LLM takes {self.d_llm}")
        self.bos_id = int(bos_id)
        self.padding_side = padding_side
        self.recompute_llm = False
        self.train(False)

    def enable_llm_recomputation(self) -> None:
        """Gradient checkpointing through the frozen LLM (the mapping's gradient flows back through it): its layers'
        activations are recomputed in the backward pass instead of kept. transformers recomputes only in training
        mode, so the LLM is put in it while training, with every dropout off (the same numbers as eval mode)."""
        self.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(self.llm.config, "attention_dropout"):
            self.llm.config.attention_dropout = 0.0
        self.recompute_llm = True
        self.train(self.training)

    def train(self, mode: bool = True) -> MindMergerModel:
        super().train(mode)
        self.encoder.eval()  # frozen parts never run dropout: states are a pure function of the input
        self.llm.train(mode and self.recompute_llm)
        for module in self.llm.modules():
            if isinstance(module, nn.Dropout):
                module.eval()
        return self

    # -- the frozen encoder ----------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, source_ids: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        """Last-layer encoder states [B, S, d_enc]; no autograd graph (no_grad, not inference_mode, because
        the mapping's backward pass reads these tensors)."""
        return self.encoder(input_ids=source_ids, attention_mask=source_mask).last_hidden_state

    # -- packing -----------------------------------------------------------------------------------
    def pack(self, source_states: torch.Tensor, source_mask: torch.Tensor, llm_ids: torch.Tensor,
             prompt_len: torch.Tensor, llm_len: torch.Tensor, padding_side: str | None = None) -> Packed:
        """One LLM input sequence per row.

        source_states [B, S, d_enc] with source_mask [B, S] (any padding side); llm_ids [B, T] holding each
        row's prompt tokens then target tokens (EOS included) in its first llm_len[b] places; the first
        prompt_len[b] of them are prompt (no loss), the rest target (loss).
        """
        side = padding_side or self.padding_side
        embed = self.llm.get_input_embeddings()
        real_source = source_mask.bool()
        with torch.no_grad():  # frozen embeddings: no graph needed for them
            tokens = embed(llm_ids)
            bos = embed(torch.full((1,), self.bos_id, dtype=torch.long, device=llm_ids.device))
        mapped = self.mapping.mlp(source_states[real_source])  # real source tokens only, row after row
        dtype = tokens.dtype
        pool = torch.cat([tokens.new_zeros(1, self.d_llm), bos.to(dtype),
                          self.mapping.end_boundary.view(1, self.d_llm).to(dtype), mapped.to(dtype),
                          tokens.flatten(0, 1)])
        B, T = llm_ids.shape
        in_target = (torch.arange(T, device=llm_ids.device)[None] >= prompt_len[:, None]) & (
            torch.arange(T, device=llm_ids.device)[None] < llm_len[:, None])
        token_labels = llm_ids.masked_fill(~in_target, IGNORE_INDEX)
        n_mapped = mapped.shape[0]
        label_pool = torch.cat([torch.full((3 + n_mapped,), IGNORE_INDEX, dtype=torch.long, device=llm_ids.device),
                                token_labels.flatten()])

        rows = []
        mapped_at = 3
        source_counts = real_source.sum(1).tolist()
        for b, (n_src, n_llm) in enumerate(zip(source_counts, llm_len.tolist(), strict=True)):
            rows.append(torch.cat([
                torch.tensor([_BOS], device=llm_ids.device),
                torch.arange(mapped_at, mapped_at + n_src, device=llm_ids.device),
                torch.tensor([_BOUNDARY], device=llm_ids.device),
                torch.arange(3 + n_mapped + b * T, 3 + n_mapped + b * T + n_llm, device=llm_ids.device),
            ]))
            mapped_at += n_src
        width = max(len(r) for r in rows)
        index = torch.full((B, width), _PAD, dtype=torch.long, device=llm_ids.device)
        for b, r in enumerate(rows):
            if side == "left":
                index[b, width - len(r):] = r
            else:
                index[b, : len(r)] = r
        mask = (index != _PAD).long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # an embedding lookup, not `pool[index]`: the boundary, BOS and padding vectors recur in every row, and on
        # CPU with more than one thread indexing's backward sums their gradients with atomic adds, in whatever order
        # the threads meet (two identical runs then differ from the first step); embedding's backward sums in a
        # fixed order
        return Packed(F.embedding(index, pool), mask, positions, label_pool[index], index)

    def pack_batch(self, batch: dict[str, torch.Tensor], padding_side: str | None = None) -> Packed:
        """A collated batch (see data.collate) → packed LLM input; encodes the source unless states are given."""
        states = batch.get("source_states")
        if states is None:
            states = self.encode(batch["source_ids"], batch["source_mask"])
        return self.pack(states, batch["source_mask"], batch["llm_ids"], batch["prompt_len"], batch["llm_len"],
                         padding_side)

    # -- the LLM -----------------------------------------------------------------------------------
    def target_logits(self, packed: Packed) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at the positions that predict a target token, and those tokens. The vocabulary projection
        runs on these positions only: for a 128k vocabulary it is most of the activation memory."""
        hidden = self.llm.base_model(inputs_embeds=packed.inputs_embeds, attention_mask=packed.attention_mask,
                                     position_ids=packed.position_ids).last_hidden_state
        predicts = packed.labels[:, 1:] != IGNORE_INDEX
        logits = self.llm.get_output_embeddings()(hidden[:, :-1][predicts]).float()
        cap = getattr(self.llm.config, "final_logit_softcapping", None)
        if cap:  # Gemma-2 style models squash their logits; keep their distribution
            logits = torch.tanh(logits / cap) * cap
        return logits, packed.labels[:, 1:][predicts]

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        logits, targets = self.target_logits(self.pack_batch(batch))
        return F.cross_entropy(logits, targets, reduction="sum")

    def token_logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per row, the summed log-probability of its target tokens (option scoring in evaluation)."""
        packed = self.pack_batch(batch)
        logits, targets = self.target_logits(packed)
        lp = torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)
        rows = (packed.labels[:, 1:] != IGNORE_INDEX).nonzero()[:, 0]
        return torch.zeros(packed.labels.shape[0], device=lp.device).index_add_(0, rows, lp)


def mindmerger_loss_sum(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The back ends' loss_fn: `model` is the MindMergerModel or a DeepSpeed engine wrapping it."""
    return model(**batch)
