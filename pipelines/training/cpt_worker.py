"""One CPT training process: what a task launches (alone, or under `torchrun` / `deepspeed` for several
processes and GPUs). Rank 0 writes the trained weights; checkpoints go to the artifact's checkpoint area.

    python -m torch.distributed.run --nproc_per_node 8 -m linguaforge.pipelines.training.cpt_worker \\
        --model BASE_DIR --blocks CORPUS_DIR --settings settings.json --out OUT_DIR \\
        [--restriction FILE --restriction-class module:Class] [--store HANDLE --kind K --key KEY]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from linguaforge.pipelines.models import load_causal_lm
from linguaforge.pipelines.training.causal_lm import CausalLMRecipe, PackedBlocks
from linguaforge.pipelines.training.cpt import WEIGHTS_FILE, load_restriction, make_backend
from linguaforge.pipelines.training.launcher import add_worker_flags, worker_checkpoints, worker_progress
from linguaforge.pipelines.training.loop import TRAIN_FILE, train
from linguaforge.pipelines.training.settings import TrainSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--blocks", required=True)
    parser.add_argument("--settings", required=True, help="JSON file of TrainSettings fields")
    parser.add_argument("--out", required=True)
    parser.add_argument("--restriction", help="a Restriction's file (MAET: its key-neuron mask)")
    parser.add_argument("--restriction-class", help="module:Class whose load() reads that file")
    add_worker_flags(parser)
    args = parser.parse_args(argv)

    settings = TrainSettings(**json.loads(Path(args.settings).read_text()))
    data = PackedBlocks.from_dir(Path(args.blocks))
    model = load_causal_lm(args.model)
    restriction = load_restriction(args.restriction_class, Path(args.restriction)) if args.restriction else None
    backend = make_backend(model, settings, data.block_size, restriction)
    result = train(backend, CausalLMRecipe(data, settings), checkpoints=worker_checkpoints(args),
                   progress=worker_progress(args))
    state = backend.full_state_dict()
    if int(os.environ.get("RANK", "0")) == 0:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(out / WEIGHTS_FILE))
        (out / TRAIN_FILE).write_text(json.dumps(result.summary() | {"losses": result.losses}))
    if torch.distributed.is_initialized():
        # leave together, and close the process group before exiting: a rank that exits with gloo's threads
        # still running dies in std::terminate (SIGABRT), and the launcher then fails the whole run
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
