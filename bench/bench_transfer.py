"""The demo's science over several seeds: does MAET, and MindMerger stacked on an LLM with the ability,
move math into the other languages? (`make science`)

For each seed, the whole demo (configs/demo.yaml with `seed` and `demo.seed` set, and any `--set`
overrides) runs into a store of its own (`<out>/seed-N`; committed stages are reused on a second call),
then the headline
— every derived model's average Δ over the non-pivot languages, with its 95 % interval — is read from
the scores of that run's report (`linguaforge run --outputs` names it; a store may also hold units of
older runs). Prints a table per seed, then the mean and spread of every Δ.

    python bench/bench_transfer.py [--seeds 0 1 2] [--config configs/demo.yaml] [--set KEY=VALUE ...]

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

from linguaforge.flows.outputs import RunOutputs  # noqa: E402
from linguaforge.pipelines.benchmarks import headline_rows  # noqa: E402
from linguaforge.storage import ArtifactStore  # noqa: E402


def override(cfg: dict, assignments: list[str]) -> None:
    """`dotted.key=YAML value` assignments, e.g. probe.k1_percent=20 or merge.mu={de: 0.5}."""
    for assignment in assignments:
        dotted, _, value = assignment.partition("=")
        node = cfg
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)


def run_seed(config: Path, seed: int, assignments: list[str], root: Path) -> list[dict]:
    cfg = yaml.safe_load(config.read_text())
    override(cfg, assignments)
    store = root / f"seed-{seed}"
    cfg.update(seed=seed, name=f"science-seed-{seed}")
    cfg["demo"]["seed"] = seed
    cfg["store"] = {"url": str(store / "store"), "cache_dir": str(store / "cache")}
    store.mkdir(parents=True, exist_ok=True)
    (store / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    subprocess.run([sys.executable, "-m", "linguaforge.flows.cli", "run", str(store / "config.yaml"),
                    "--outputs", str(store / "outputs.json")], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    report = RunOutputs.model_validate_json((store / "outputs.json").read_text()).report
    scores = ArtifactStore(cfg["store"]["url"], cache_dir=cfg["store"]["cache_dir"]).open(report).read_json("scores.json")
    print(f"\nseed {seed}: accuracy % per language")
    for bench in sorted({s["benchmark"] for s in scores}):
        for model in sorted({s["model"] for s in scores if s["benchmark"] == bench}):
            cells = {s["language"]: 100 * s["accuracy"] for s in scores if (s["benchmark"], s["model"]) == (bench, model)}
            print(f"  {bench:<7s} {model:>20s} " + "  ".join(f"{lang} {acc:5.1f}" for lang, acc in cells.items()))
    return headline_rows(scores, cfg.get("pivot_language", "en"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    parser.add_argument("--set", dest="assignments", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides of the configuration, e.g. probe.k1_percent=20")
    parser.add_argument("--out", type=Path, default=ROOT / ".linguaforge" / "science",
                        help="one store per seed under this folder (reused on a second call)")
    args = parser.parse_args()
    per_seed = {seed: run_seed(args.config, seed, args.assignments, args.out) for seed in args.seeds}
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
