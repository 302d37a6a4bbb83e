"""The greedy loop both decoders share (transformers' models through `decoding.continue_greedy`, plain Llamas
through `llama_decoder.LlamaDecoder.greedy`): argmax, EOS and stop strings, rows leaving the batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from linguaforge.pipelines.interrupt import check_stop

# (the chosen tokens of the rows still going, the batch positions kept or None when every row goes on)
#   -> the next logits of those rows
Advance = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def greedy_loop(logits: torch.Tensor, max_new_tokens: int, eos_ids: Sequence[int],
                stopped: Callable[[list[int]], bool] | None, advance: Advance) -> list[list[int]]:
    """Greedy decoding from the prefill's `logits` (one row per prompt), where a row leaves the batch as soon
    as it is done (EOS, or `stopped` on its tokens so far): `advance` is told which batch positions stay and
    computes only those. Returns each row's new tokens, EOS excluded."""
    rows = list(range(logits.shape[0]))  # batch position → row
    generated: list[list[int]] = [[] for _ in rows]
    eos = torch.tensor(list(eos_ids) or [-1], device=logits.device)
    for step in range(max_new_tokens):
        check_stop("generating")
        chosen = logits.argmax(-1)
        done = torch.isin(chosen, eos).tolist()
        for j, (row, token) in enumerate(zip(rows, chosen.tolist(), strict=True)):
            if not done[j]:
                generated[row].append(token)
                done[j] = stopped is not None and stopped(generated[row])
        if step + 1 == max_new_tokens or all(done):
            break
        keep = None
        if any(done):  # the finished rows leave the batch, their cache with them
            kept = [j for j, d in enumerate(done) if not d]
            keep = torch.tensor(kept, device=logits.device)
            rows, chosen = [rows[j] for j in kept], chosen[keep]
        logits = advance(chosen, keep)
    return generated
