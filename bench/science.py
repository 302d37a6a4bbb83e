"""`make science`: MAET and its baselines on the demo world, their settings chosen on dev data only, then
scored once on test over several seeds, beside MAET at the paper's settings and the ablation ladder.

1. Selection (one seed, `--selection-seed`): the coordinate search of bench/science.yaml, every run scored on
   the world's dev split (dev/mgsm, dev/msvamp; disjoint from the test problems and every training text). Writes
   `<out>/selection.json`: every trial with its dev objective, and the chosen overrides.
2. Test (every seed of `--seeds`): per seed, in a store of its own,
   - `chosen`: the demo configuration with the chosen settings, MindMerger included (what `make demo` would run);
   - `paper`: MAET at the paper's settings (the demo configuration as committed, the chosen baseline);
   - the ladder: at the chosen mask settings, k1 varied: LLM_{A,L0}, base + R(A) at the paper's α, β, and the
     merge at the paper's merge settings.
   Prints, per seed, every model's mean chance-adjusted Δ over the target languages against the base with its
   95 % paired interval, and its English Δ; then the mean and spread over the seeds. Writes `<out>/test.json`.

Every run is `linguaforge run` on the demo configuration plus dotted overrides (its command line), on the
seed's store, so what two runs share is made once. Run again, it reuses every committed stage.

    python bench/science.py [--seeds 0 1 2 3 4] [--selection-seed 0] [--search bench/science.yaml]
                            [--phase select|test|all|report] [--out .linguaforge/science]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

from linguaforge.flows.outputs import RunOutputs  # noqa: E402
from linguaforge.pipelines.benchmarks import headline_rows  # noqa: E402
from linguaforge.pipelines.benchmarks.chance import answer_summary  # noqa: E402
from linguaforge.storage import ArtifactStore  # noqa: E402

SEARCH = ROOT / "bench" / "science.yaml"
COMMITTED = ROOT / "bench" / "science_selection.json"  # the selection behind configs/demo.yaml (seed 0, 2026-12-07)
SPLITS = {"dev": "dev", "test": "bench"}  # the demo world's folder of each split
ALL_FAMILIES = ["q", "k", "v", "o", "up", "gate", "down", "embed", "norm", "lm_head"]
# LLM_{A,L0} as a merge: base + R(A) with α = 1, β = 0 (R(A) = Θ_{A,L0} − Θ_o), every tensor, no language delta
ABILITY_MODEL = {"decompose.alpha": 1.0, "decompose.beta": 0.0, "merge.mu": "zero", "merge.gamma": 1.0,
                 "merge.k2_percent": 100.0, "merge.tensor_families": ALL_FAMILIES}
# base + R(A) alone at the paper's α, β
ABILITY_DELTA = ABILITY_MODEL | {"decompose.alpha": 0.8, "decompose.beta": 0.2}
# what every run but `chosen` leaves out: MindMerger, and the task vector (full CPT's delta at λ = 1: the same model)
LEAN = {"mindmerger.enabled": False, "merge.baselines": ["full_cpt"]}


@dataclass
class World:
    """One seed's world and store, and the demo configuration every run of it starts from."""

    config: dict
    seed: int
    root: Path
    runs: int = 0
    seconds: float = 0.0
    memo: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def targets(self) -> list[str]:
        return list(self.config["languages"])

    @property
    def pivot(self) -> str:
        return self.config.get("pivot_language", "en")

    def base_config(self, split: str) -> Path:
        cfg = yaml.safe_load(yaml.safe_dump(self.config))
        cfg.update(seed=self.seed)
        cfg["demo"]["seed"] = self.seed
        cfg["store"] = {"url": str(self.root / "store"), "cache_dir": str(self.root / "cache")}
        for bench in cfg["evaluation"]["benchmarks"]:  # the test files are demo:bench/<name>, dev demo:dev/<name>
            bench["data"] = bench["data"].replace("demo:bench/", f"demo:{SPLITS[split]}/")
        path = self.root / f"{split}.yaml"
        self.root.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def store(self) -> ArtifactStore:
        return ArtifactStore(str(self.root / "store"), cache_dir=self.root / "cache")

    def outputs(self, split: str, name: str) -> RunOutputs:
        return RunOutputs.model_validate_json((self.root / "outputs" / f"{split}-{name}.json").read_text())

    def run(self, name: str, overrides: dict, split: str) -> list[dict]:
        """Scores of `linguaforge run` with these overrides, on this seed's dev or test split (memoised)."""
        key = json.dumps([split, overrides], sort_keys=True)
        if key in self.memo:
            return self.memo[key]
        outputs = self.root / "outputs" / f"{split}-{name}.json"
        outputs.parent.mkdir(parents=True, exist_ok=True)
        outputs.unlink(missing_ok=True)
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "linguaforge.flows.cli", "run", str(self.base_config(split)),
                               f"name=science-{split}-{name}", *assignments(overrides), "--outputs", str(outputs)],
                              cwd=ROOT, capture_output=True, text=True)
        took = time.monotonic() - started
        self.runs, self.seconds = self.runs + 1, self.seconds + took
        print(f"    (seed {self.seed}, {split} run {name}: {took / 60:.1f} min)", flush=True)
        if done.returncode != 0:
            raise SystemExit(f"science: run {name} (seed {self.seed}, {split}) failed:\n{done.stderr[-2000:]}")
        self.memo[key] = self.store().open(self.outputs(split, name).report).read_json("scores.json")
        return self.memo[key]


def assignments(overrides: dict) -> list[str]:
    """`key.path=value` arguments of `linguaforge run`, each value one line of YAML."""
    def text(value) -> str:
        return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
    return [f"{key}={text(value)}" for key, value in overrides.items()]


# -- what is measured ------------------------------------------------------------------------------------------
def adjusted(scores: list[dict], model: str, languages: list[str]) -> float | None:
    """Mean chance-adjusted accuracy in points of `model` over `languages` and every benchmark scored."""
    cells = [100 * s["adjusted"] for s in scores if s["model"] == model and s["language"] in languages]
    return statistics.mean(cells) if cells else None


def shuffled_control(scores: list[dict], model: str, languages: list[str], seed: int = 0) -> float | None:
    """The sensitivity control: the same answers against shuffled golds, chance-adjusted, in points (≈ 0 for any
    model; far from 0 would mean the adjustment, not the model, makes the score)."""
    rng = random.Random(seed)
    found = []
    for s in scores:
        if s["model"] == model and s["language"] in languages and s.get("items"):
            golds = rng.sample(s["items"]["gold"], len(s["items"]["gold"]))
            answers = s["items"]["answer"]
            right = [a == g for a, g in zip(answers, golds, strict=True)]
            found.append(100 * answer_summary(answers, golds, right)["adjusted"])
    return statistics.mean(found) if found else None


def objective(scores: list[dict], judge: dict, world: World) -> float:
    model = "maet" if judge["model"] == "ability" else judge["model"]
    languages = [world.pivot] if judge["over"] == "ability" else world.targets
    found = adjusted(scores, model, languages)
    if found is None:
        raise SystemExit(f"science: no {model} scores on {languages}")
    return found


def check_search(search: dict, path: Path) -> None:
    """The search file's shape, checked before any run (a YAML slip must not cost an hour)."""
    for part in ("baseline", "maet"):
        for knob in search.get(part, []):
            judge = knob.get("judge", {})
            values = knob.get("values")
            if (not isinstance(judge.get("model"), str) or judge.get("over") not in ("targets", "ability")
                    or not values or not all(isinstance(v, dict) and v for v in values)):
                raise SystemExit(f"{path}: {part} knob {knob.get('name')!r} needs judge {{model: <a model of the run, or "
                                 f"ability>, over: targets|ability}} and a list of override sets as values; got {knob}")
    if not search.get("ladder", {}).get("k1"):
        raise SystemExit(f"{path}: ladder.k1 needs a list of k1 percentages")


# -- 1. selection on dev -----------------------------------------------------------------------------------------
def coordinate_search(world: World, knobs: list[dict], fixed: dict, trials: list[dict], min_gain: float) -> dict:
    """The best overrides knob by knob (science.yaml's header), starting from every knob's first value; a value
    replaces the current one only when it scores more than `min_gain` points higher."""
    best = {k: v for knob in knobs for k, v in knob["values"][0].items()}
    for knob in knobs:
        judged = (ABILITY_MODEL if knob["judge"]["model"] == "ability" else {}) | knob["judge"].get("with", {})
        scored = []
        for value in knob["values"]:
            overrides = fixed | best | value | judged
            name = f"{len(trials):02d}"
            score = objective(world.run(name, LEAN | overrides, "dev"), knob["judge"], world)
            scored.append((score, value))
            trials.append({"knob": knob["name"], "value": value, "objective": round(score, 2),
                           "judge": knob["judge"]})
            print(f"  {knob['name']:<28s} {json.dumps(value):<60s} dev {score:+6.1f}", flush=True)
        current = scored[0]  # the first value is the run so far
        for score, value in scored[1:]:
            if score > current[0] + min_gain:
                current = (score, value)
        best |= current[1]
    return best


def _starting_with(values: list[dict], best: dict) -> list[dict]:
    """A knob's values with the one `best` holds first (a pass starts from the previous pass's choice)."""
    chosen = [v for v in values if all(best.get(k) == x for k, x in v.items())]
    return chosen + [v for v in values if v not in chosen]


def select(world: World, search: dict) -> dict:
    print(f"selection on the dev split of seed {world.seed}: mean chance-adjusted dev accuracy (points)", flush=True)
    trials: list[dict] = []
    gain = float(search.get("min_gain", 0.0))
    baseline = coordinate_search(world, search["baseline"], {}, trials, gain)
    maet: dict = {}
    for number in range(1, int(search.get("passes", 1)) + 1):  # a later pass starts where the last one ended
        print(f"  MAET, pass {number}", flush=True)
        knobs = [k | {"values": _starting_with(k["values"], maet)} for k in search["maet"]] if maet else search["maet"]
        maet = coordinate_search(world, knobs, baseline, trials, gain)
    paper = {k: v for knob in search["maet"] for k, v in knob["values"][0].items()}
    return {"seed": world.seed, "baseline": baseline, "maet": maet, "paper": paper, "trials": trials,
            "runs": world.runs, "minutes": round(world.seconds / 60, 1)}


# -- 2. test, once per seed --------------------------------------------------------------------------------------
def renamed(scores: list[dict], names: dict[str, str]) -> list[dict]:
    """The scores of the given models, under new names (their base stays the run's base)."""
    return [s | {"model": names[s["model"]]} for s in scores if s["model"] in names]


def headline_scores(chosen: list[dict], paper: list[dict]) -> list[dict]:
    """The chosen run's models (its MAET named as dev-chosen) and the paper run's MAET, as one comparison."""
    scores = [s | {"base": "maet (dev-chosen)"} if s.get("base") == "maet" else s for s in chosen if s["model"] != "maet"]
    scores += renamed(chosen, {"maet": "maet (dev-chosen)"})  # MindMerger on it keeps it as its base
    return scores + renamed(paper, {"maet": "maet (paper)"})


def stored_pairs(world: World) -> list[dict]:
    """PAIRS for a seed tested before test.json kept them, from the scores its store already holds (no run)."""
    chosen, paper = (world.store().open(world.outputs("test", name).report).read_json("scores.json")
                     for name in ("chosen", "paper"))
    return paired_rows(headline_scores(chosen, paper), world.pivot)


def test_seed(world: World, selection: dict, k1s: list[float]) -> list[dict]:
    chosen_settings = selection["baseline"] | selection["maet"]
    chosen = world.run("chosen", chosen_settings, "test")
    paper = world.run("paper", LEAN | selection["baseline"] | selection["paper"], "test")
    scores = headline_scores(chosen, paper)
    mask = {k: v for k, v in selection["maet"].items() if k.startswith(("probe.", "masked_cpt."))}
    for k1 in k1s:
        at = LEAN | selection["baseline"] | selection["paper"] | mask | {"probe.k1_percent": k1}
        scores += renamed(world.run(f"ladder-k1-{k1:g}-ability", at | ABILITY_MODEL, "test"),
                          {"maet": f"LLM_A,L0 k1={k1:g}"})
        scores += renamed(world.run(f"ladder-k1-{k1:g}-delta", at | ABILITY_DELTA, "test"),
                          {"maet": f"base+R(A) k1={k1:g}"})
        scores += renamed(world.run(f"ladder-k1-{k1:g}-merge", at, "test"), {"maet": f"merge k1={k1:g}"})
    return scores


def per_benchmark(row: dict) -> dict[str, dict]:
    """A headline row's differences, per benchmark: Δ and its interval, to a tenth of a point."""
    return {b: {k: round(v, 1) for k, v in d.items() if k in ("delta", "ci_low", "ci_high")}
            for b, d in row.items() if b not in ("model", "vs") and d is not None}


def seed_table(scores: list[dict], world: World) -> list[dict]:
    """Per model: the headline's Δ against the base (targets, paired interval) and the English Δ."""
    rows = []
    base_en = adjusted(scores, "base", [world.pivot])
    for row in headline_rows(scores, world.pivot):
        if row["vs"] != "base":
            continue
        en = adjusted(scores, row["model"], [world.pivot])
        shuffled = shuffled_control(scores, row["model"], world.targets)
        rows.append({"model": row["model"], "english": None if en is None else round(en - base_en, 1),
                     "shuffled": None if shuffled is None else round(shuffled, 1),
                     **per_benchmark(row)})
    return rows


# the comparisons the method is for, paired on the same items: MAET against the baseline it should beat, and
# MindMerger on each of them
PAIRS = [("maet (dev-chosen)", "full_cpt"), ("mindmerger-maet", "mindmerger-full_cpt"), ("maet (paper)", "full_cpt")]


def paired_rows(scores: list[dict], pivot: str) -> list[dict]:
    """Per pair of PAIRS: the model's target Δ against the other model, with the paired interval (the model is
    re-based onto the other for the headline's arithmetic)."""
    rows = []
    for model, ref in PAIRS:
        rebased = [s | {"base": ref} if s["model"] == model else s for s in scores]
        for row in headline_rows(rebased, pivot):
            if row["model"] == model and row["vs"] == ref:
                rows.append({"model": model, "vs": ref, **per_benchmark(row)})
    return rows


def delta_norms(world: World, run: str) -> list[dict]:
    """Why the summed language deltas can swamp R(A): per tensor family, the Frobenius norms of the base, of R(A)
    (Eq. 2), of R_Lang = Σ R(L_i) (Eq. 3 at μ = 1) and of their mean (Σμ = 1), and the cosine of R(A) and R_Lang,
    from the decomposed deltas of one run."""
    import torch

    from linguaforge.pipelines.merging.deltas import SparseDelta
    from linguaforge.pipelines.merging.methods.maet import family_of
    from linguaforge.pipelines.weights import WeightReader

    outputs, store = world.outputs("test", run), world.store()
    decomposed = store.open(outputs.decomposed)
    ability = SparseDelta(decomposed.path("ability.safetensors"))
    languages = [SparseDelta(decomposed.path(f"language-{c}.safetensors")) for c in world.targets]
    base = WeightReader(str(store.open(outputs.base_llm).dir("model")))
    sums: dict[str, dict[str, float]] = {}
    for name in base.names():
        w = base.get(name).double()
        r_a = ability.dense(name).double() if name in ability.names() else torch.zeros_like(w)
        r_lang = sum((d.dense(name).double() for d in languages if name in d.names()), torch.zeros_like(w))
        acc = sums.setdefault(family_of(name) or "other", dict.fromkeys(("base", "ability", "lang", "dot"), 0.0))
        acc["base"] += float(w.square().sum())
        acc["ability"] += float(r_a.square().sum())
        acc["lang"] += float(r_lang.square().sum())
        acc["dot"] += float((r_a * r_lang).sum())
    rows = []
    for family, acc in sums.items():
        norm = {k: acc[k] ** 0.5 for k in ("base", "ability", "lang")}
        cosine = acc["dot"] / (norm["ability"] * norm["lang"]) if norm["ability"] and norm["lang"] else 0.0
        rows.append({"family": family, "base": round(norm["base"], 3), "R(A)": round(norm["ability"], 3),
                     "R_Lang sum": round(norm["lang"], 3), "R_Lang mean": round(norm["lang"] / len(languages), 3),
                     "cos(R(A), R_Lang)": round(cosine, 3)})
    return rows


def print_norms(seed: int, run: str, rows: list[dict]) -> None:
    print(f"\nseed {seed}: Frobenius norms per tensor family (the decomposed deltas of run {run}; R(A) at α 0.8, "
          f"β 0.2, before γ)")
    print("  " + "  ".join(f"{k:>17s}" for k in rows[0]))
    for row in rows:
        print("  " + "  ".join(f"{v:>17}" for v in row.values()), flush=True)


def print_seed(seed: int, rows: list[dict], pairs: list[dict]) -> None:
    print(f"\nseed {seed}: chance-adjusted Δ against the base, points (targets: mean over the target languages, "
          f"95 % paired interval; en: English; shuffled: its own adjusted accuracy on the targets against shuffled "
          f"golds, a control that must be ≈ 0)")
    def cells(row: dict) -> str:
        return "   ".join(f"{b} {d['delta']:+5.1f} [{d['ci_low']:+5.1f}, {d['ci_high']:+5.1f}]"
                          for b, d in row.items() if isinstance(d, dict))

    for row in rows:
        print(f"  {row['model']:<22s} en {row['english']:+6.1f}   {cells(row)}   shuffled {row['shuffled']:+5.1f}",
              flush=True)
    for row in pairs:
        print(f"  {row['model'] + ' vs ' + row['vs']:<40s} {cells(row)}", flush=True)


def print_summary(per_seed: dict[int, list[dict]]) -> None:
    print(f"\nover {len(per_seed)} seeds: mean target Δ (min … max), and how many seeds' intervals lie above 0")
    collected: dict[tuple[str, str], list[dict]] = {}
    for rows in per_seed.values():
        for row in rows:
            for bench, d in row.items():
                if isinstance(d, dict):
                    collected.setdefault((row["model"], bench), []).append(d)
    for (model, bench), ds in collected.items():
        deltas = [d["delta"] for d in ds]
        above = sum(d["ci_low"] > 0 for d in ds)
        print(f"  {model:<22s} {bench:<7s} {statistics.mean(deltas):+6.1f} ({min(deltas):+.1f} … "
              f"{max(deltas):+.1f}), above 0 on {above} of {len(ds)}")


def _labelled(seed: dict) -> dict[str, dict]:
    """A seed's rows of test.json by label: each model against the base, then each pair of PAIRS."""
    return {row["model"]: row for row in seed["models"]} | {f"{r['model']} vs {r['vs']}": r for r in seed.get("pairs", [])}


def print_markdown(kept: dict[str, dict]) -> None:
    """test.json as the tables of docs/demo-world.md: per benchmark, each model's target Δ against the base (and each
    pair's against its reference) with the paired interval per seed, and the mean over the seeds."""
    seeds = sorted(kept, key=int)
    rows = {seed: _labelled(kept[seed]) for seed in seeds}
    labels = list(dict.fromkeys(label for seed in seeds for label in rows[seed]))
    benches = list(dict.fromkeys(b for seed in seeds for r in rows[seed].values() for b, d in r.items()
                                 if isinstance(d, dict)))
    for bench in benches:
        print(f"\n{bench}: target Δ [95 % paired interval], chance-adjusted points\n")
        print("| model | " + " | ".join(f"seed {seed}" for seed in seeds) + " | mean | above 0 |")
        print("|---|" + "---|" * (len(seeds) + 2))
        for label in labels:
            got = [rows[seed][label].get(bench) if label in rows[seed] else None for seed in seeds]
            text = [f"{d['delta']:+.1f} [{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]" if d else "–" for d in got]
            found = [d for d in got if d]
            mean = f"{statistics.mean(d['delta'] for d in found):+.1f}" if found else "–"
            print(f"| {label} | " + " | ".join(text) + f" | {mean} | {sum(d['ci_low'] > 0 for d in found)} of {len(found)} |")
    print("\nEnglish Δ against the base\n")
    print("| model | " + " | ".join(f"seed {seed}" for seed in seeds) + " |")
    print("|---|" + "---|" * len(seeds))
    for label in dict.fromkeys(row["model"] for seed in seeds for row in kept[seed]["models"]):
        ens = [rows[seed][label]["english"] if label in rows[seed] else None for seed in seeds]
        print(f"| {label} | " + " | ".join("–" if e is None else f"{e:+.1f}" for e in ens) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--selection-seed", type=int, default=0)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    parser.add_argument("--search", type=Path, default=SEARCH)
    parser.add_argument("--phase", choices=["select", "test", "all", "report"], default="all",
                        help="report: print test.json (every seed tested so far) as markdown tables, run nothing")
    parser.add_argument("--out", type=Path, default=ROOT / ".linguaforge" / "science")
    args = parser.parse_args()
    if args.phase == "report":
        kept = json.loads((args.out / "test.json").read_text())
        for seed, table in kept.items():
            if "pairs" not in table:
                table["pairs"] = stored_pairs(World({}, int(seed), args.out / f"seed-{seed}"))
        print_markdown(kept)
        return
    config, search = yaml.safe_load(args.config.read_text()), yaml.safe_load(args.search.read_text())
    check_search(search, args.search)
    selection_file = args.out / "selection.json"
    if args.phase in ("select", "all"):
        world = World(config, args.selection_seed, args.out / f"seed-{args.selection_seed}")
        selection = select(world, search)
        selection_file.parent.mkdir(parents=True, exist_ok=True)
        selection_file.write_text(json.dumps(selection, indent=1))
        print(f"chosen ({selection['runs']} runs, {selection['minutes']} min): "
              f"{json.dumps(selection['baseline'] | selection['maet'])}", flush=True)
    if args.phase == "select":
        return
    if not selection_file.exists():  # a fresh clone: the committed selection of docs/demo-world.md
        print(f"no {selection_file}: testing the committed selection {COMMITTED.relative_to(ROOT)}", flush=True)
        selection_file = COMMITTED
    selection = json.loads(selection_file.read_text())
    per_seed, norms = {}, {}
    kept = json.loads((args.out / "test.json").read_text()) if (args.out / "test.json").exists() else {}
    for seed in args.seeds:
        world = World(config, seed, args.out / f"seed-{seed}")
        scores = test_seed(world, selection, search["ladder"]["k1"])
        per_seed[seed], pairs = seed_table(scores, world), paired_rows(scores, world.pivot)
        print_seed(seed, per_seed[seed], pairs)
        k1 = selection["maet"].get("probe.k1_percent")  # the chosen masks, the paper's decomposition
        run = f"ladder-k1-{k1:g}-merge" if k1 in search["ladder"]["k1"] else "paper"
        norms[seed] = delta_norms(world, run)
        print_norms(seed, run, norms[seed])
        kept[str(seed)] = {"models": per_seed[seed], "pairs": pairs, "norms": norms[seed]}  # seeds of earlier calls stay
        (args.out / "test.json").write_text(json.dumps(kept, indent=1))
    print_summary({int(seed): kept[seed]["models"] for seed in sorted(kept, key=int)})  # this call's seeds and earlier ones


if __name__ == "__main__":
    main()
