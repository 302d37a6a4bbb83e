"""One evaluation worker of `ParallelGenerator` (parallel.py): a model on one device, answering JSON-line requests
on stdin with JSON lines on stdout until it is told to exit. Its stderr is the parent's, for tracebacks."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

from linguaforge.pipelines.errors import InputError


@dataclass(frozen=True)
class Item:
    id: str
    benchmark: str
    language: str
    prompt: str
    source_text: str
    continuations: tuple[str, ...] = ()


def _answer(body: dict) -> None:
    sys.stdout.write(json.dumps(body, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="linguaforge evaluation worker")
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--revision")
    args = parser.parse_args(argv)
    import torch

    from linguaforge.pipelines.generation.causal_lm import HFCausalLMGenerator

    if args.device == "cpu":  # the CPU's cores shared among the workers on it
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.workers))
    batch = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    try:
        generator = HFCausalLMGenerator.from_pretrained(args.model, dtype=args.dtype, batch_size=batch,
                                                        device=args.device, revision=args.revision)
    except InputError as exc:
        _answer({"error": str(exc)})
        return
    _answer({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "exit":
            return
        items = [Item(**(raw | {"continuations": tuple(raw["continuations"])})) for raw in request["items"]]
        try:
            if request["op"] == "generate":
                result = generator.generate(items, request["max_new_tokens"], request["stop"])
            else:
                result = generator.option_logprobs(items)
        except InputError as exc:
            _answer({"error": str(exc)})
            continue
        _answer({"result": result})


if __name__ == "__main__":
    main()
