"""A sweep over MAET's knobs on the demo world: which k1, selection, granularity, masked-training budget
and merge weights, if any, let the MAET model beat the base? (`make sweep-maet`)

Every variant is the demo configuration plus a few dotted overrides (bench/sweep_maet.yaml, or
`--variants FILE.yaml`), given to `linguaforge run` on its command line (`key.path=value`, no file per variant)
on one shared store, so that what the variants share (world, bootstrap,
corpora, full CPT, the base's evaluation) is computed once. MindMerger is off and only MGSM is scored:
the sweep asks one question. Prints, per variant, the masked ability run's last loss (on the ability +
English mixture) and the MAET model's MGSM accuracy in English, on average over the targets, and on the
low-resource-style languages, next to the base and full CPT.

    python bench/sweep_maet.py [--only NAME ...] [--store DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

from linguaforge.storage import ArtifactStore  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from science import assignments  # noqa: E402  (the one way a dotted override is written on the command line)

VARIANTS = ROOT / "bench" / "sweep_maet.yaml"  # the sweep of docs/demo-world.md


def sweep_config(base: dict, store: Path) -> Path:
    """The configuration every variant shares: the demo's, on the sweep's store, MindMerger off, MGSM only."""
    cfg = yaml.safe_load(yaml.safe_dump(base))
    cfg["store"] = {"url": str(store / "store"), "cache_dir": str(store / "cache")}
    cfg["mindmerger"] = {**cfg.get("mindmerger", {}), "enabled": False}
    cfg["evaluation"]["benchmarks"] = [b for b in cfg["evaluation"]["benchmarks"] if b["name"] == "mgsm"]
    path = store / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def variant_overrides(name: str, overrides: dict) -> list[str]:
    """A variant as `linguaforge run` overrides (values written as YAML, as the command line reads them)."""
    return [f"name=sweep-{name}", *assignments(overrides)]


def run_report(store: ArtifactStore, run: str):
    return max((m for m in store.list("report") if m.params.get("run") == run), key=lambda m: m.created_at)


def ancestors(store: ArtifactStore, manifest) -> list:
    """Every artifact the given one was made from, following the manifests' recorded inputs."""
    seen, todo, out = set(), list(manifest.inputs.values()), []
    while todo:
        entry = todo.pop()
        if (entry.kind, entry.key) in seen:
            continue
        seen.add((entry.kind, entry.key))
        parent = store.manifest(entry.kind, entry.key)
        out.append(parent)
        todo.extend(parent.inputs.values())
    return out


def summarise(store: ArtifactStore, run: str, pivot: str, low: list[str]) -> tuple[dict[str, dict], float | None]:
    """MGSM accuracy per model of one run (found by its report), and the last loss of the masked ability
    run that its MAET model was merged from."""
    report = run_report(store, run)
    scores = store.open(("report", report.key)).read_json("scores.json")
    by_model: dict[str, dict[str, float]] = {}
    for s in scores:
        by_model.setdefault(s["model"], {})[s["language"]] = 100 * s["accuracy"]
    table = {}
    for model, acc in by_model.items():
        targets = [lang for lang in acc if lang != pivot]
        table[model] = {"en": acc.get(pivot), "targets": statistics.mean(acc[t] for t in targets),
                        "low": statistics.mean(acc[t] for t in low if t in acc)}
    maet_units = [store.manifest(e.kind, e.key) for e in report.inputs.values()]
    maet_units = [m for m in maet_units if m.params.get("model") == "maet"]
    loss = None
    if maet_units:
        ability_runs = [m for m in ancestors(store, maet_units[0])
                        if m.stage == "masked_cpt" and "mask1" in m.inputs]  # ability + pivot: two masks
        loss = ability_runs[0].metrics.get("final_loss") if ability_runs else None
    return table, loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    parser.add_argument("--variants", type=Path, default=VARIANTS, help="YAML: {name: {dotted.key: value}}")
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--store", type=Path, default=ROOT / ".linguaforge" / "sweep-maet")
    args = parser.parse_args()
    variants = yaml.safe_load(args.variants.read_text())
    base = yaml.safe_load(args.config.read_text())
    args.store.mkdir(parents=True, exist_ok=True)
    pivot, low = base.get("pivot_language", "en"), base["demo"]["low_resource_languages"]
    print(f"{'variant':<24s} {'mask loss':>9s} {'model':<10s} {'en':>5s} {'targets':>8s} {'sw,bn':>6s}", flush=True)
    config = sweep_config(base, args.store)
    for name, overrides in variants.items():
        if args.only and name not in args.only:
            continue
        run = subprocess.run([sys.executable, "-m", "linguaforge.flows.cli", "run", str(config),
                              *variant_overrides(name, overrides)], cwd=ROOT, capture_output=True, text=True)
        if run.returncode != 0:
            print(f"{name:<24s} FAILED: {run.stdout[-800:]}{run.stderr[-800:]}", flush=True)
            continue
        store = ArtifactStore(str(args.store / "store"), cache_dir=args.store / "cache")
        table, loss = summarise(store, f"sweep-{name}", pivot, low)
        for model in ("base", "full_cpt", "maet"):
            row = table.get(model)
            if row:
                print(f"{name:<24s} {loss or 0:9.3f} {model:<10s} {row['en']:5.1f} {row['targets']:8.1f} "
                      f"{row['low']:6.1f}", flush=True)


if __name__ == "__main__":
    main()
