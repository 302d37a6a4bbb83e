"""The demo's science over several seeds: does MAET, and MindMerger stacked on an LLM with the ability,
move math into the other languages? (`make science`)

For each seed, the whole demo (configs/demo.yaml with `seed` and `demo.seed` set) runs into a store of
its own (`.linguaforge/science/seed-N`; committed stages are reused on a second call), then the headline
— every derived model's average Δ over the non-pivot languages, with its 95 % interval — is read from
that store's evaluation units. Prints a table per seed, then the mean and spread of every Δ.

    python bench/bench_transfer.py [--seeds 0 1 2] [--config configs/demo.yaml]

Each seed is a full `make demo` (about 9 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.benchmarks import headline_rows, read_scores  # noqa: E402


def run_seed(config: Path, seed: int) -> list[dict]:
    cfg = yaml.safe_load(config.read_text())
    store = ROOT / ".linguaforge" / "science" / f"seed-{seed}"
    cfg.update(seed=seed, name=f"science-seed-{seed}")
    cfg["demo"]["seed"] = seed
    cfg["store"] = {"url": str(store / "store"), "cache_dir": str(store / "cache")}
    store.mkdir(parents=True, exist_ok=True)
    (store / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    subprocess.run([sys.executable, "-m", "flows.cli", "run", str(store / "config.yaml")], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return headline_rows(read_scores(store / "store" / "eval"), cfg.get("pivot_language", "en"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    args = parser.parse_args()
    per_seed = {seed: run_seed(args.config, seed) for seed in args.seeds}
    deltas: dict[tuple[str, str, str], list[float]] = {}
    for seed, rows in per_seed.items():
        print(f"\nseed {seed}: average Δ over the non-pivot languages (points, 95 % interval)")
        for row in rows:
            cells = []
            for bench, d in row.items():
                if bench in ("model", "vs") or d is None:
                    continue
                deltas.setdefault((row["model"], row["vs"], bench), []).append(d["delta"])
                cells.append(f"{bench} {d['delta']:+.1f} [{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]")
            print(f"  {row['model']:>20s} vs {row['vs']:<9s} " + "  ".join(cells))
    print(f"\nover {len(args.seeds)} seeds: mean Δ (min … max)")
    for (model, vs, bench), values in deltas.items():
        print(f"  {model:>20s} vs {vs:<9s} {bench:<13s} {statistics.mean(values):+6.1f} "
              f"({min(values):+.1f} … {max(values):+.1f})")


if __name__ == "__main__":
    main()
