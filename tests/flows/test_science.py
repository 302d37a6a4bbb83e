"""`make science` (bench/science.py) on a tiny world: the settings are chosen on the dev split only, by the
documented rule (every knob's best dev objective, the starting value unless beaten), and the test split is read
only after, by the chosen run, the paper's run and the ladder. Real subprocesses, real runs, a real store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from linguaforge.flows.outputs import RunOutputs
from linguaforge.storage import ArtifactStore
from tests.flows.test_cli_run import TINY

ROOT = Path(__file__).resolve().parents[2]

SEARCH = {
    "min_gain": 0.5,
    "passes": 2,
    "baseline": [{"name": "full CPT learning rate", "judge": {"model": "full_cpt", "over": "targets"},
                  "values": [{"full_cpt.train.learning_rate": 1e-3}, {"full_cpt.train.learning_rate": 3e-2}]}],
    "maet": [{"name": "masked steps", "judge": {"model": "ability", "over": "ability"},
              "values": [{"masked_cpt.train.steps": 4}, {"masked_cpt.train.steps": 6}]},
             {"name": "μ", "judge": {"model": "maet", "over": "targets"},
              "values": [{"merge.mu": "sum"}, {"merge.mu": "mean"}]}],
    "ladder": {"k1": [100.0]},
}


def _split_read(store: ArtifactStore, outputs: Path) -> set[str]:
    """The benchmark folders of the world that a run's evaluation units read (dev/… or bench/…)."""
    run = RunOutputs.model_validate_json(outputs.read_text())
    return {store.manifest(e.ref.kind, e.ref.key).params["data"]["artifact_path"].split("/")[0]
            for e in run.evaluations}


@pytest.mark.timeout(1800)
def test_science_selects_on_dev_then_tests_once(tmp_path):
    cfg = json.loads(json.dumps(TINY))
    cfg["demo"]["dev_items"] = 4
    cfg["mindmerger"]["llms"] = ["merged", "full_cpt"]
    cfg["evaluation"]["benchmarks"] = [{"name": "mgsm", "data": "demo:bench/mgsm", "max_new_tokens": 12},
                                       {"name": "msvamp", "data": "demo:bench/msvamp", "max_new_tokens": 12}]
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(SEARCH, allow_unicode=True))
    out = tmp_path / "science"
    done = subprocess.run([sys.executable, "bench/science.py", "--config", str(tmp_path / "demo.yaml"), "--search",
                           str(tmp_path / "search.yaml"), "--seeds", "0", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1700)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    selection = json.loads((out / "selection.json").read_text())
    trials = selection["trials"]
    assert [t["knob"] for t in trials] == (["full CPT learning rate"] * 2
                                           + (["masked steps"] * 2 + ["μ"] * 2) * 2)  # MAET's knobs twice
    chosen = selection["baseline"] | selection["maet"]
    last_pass = trials[:2] + trials[-4:]
    for knob in SEARCH["baseline"] + SEARCH["maet"]:  # the rule: a value replaces the one before by > min_gain
        tried = [t for t in last_pass if t["knob"] == knob["name"]]
        best = tried[0]
        for t in tried[1:]:
            best = t if t["objective"] > best["objective"] + SEARCH["min_gain"] else best
        assert all(chosen[k] == v for k, v in best["value"].items()), knob["name"]
    for knob in ("masked steps", "μ"):  # the second pass starts from the first pass's choice of that knob
        first, second = [t for t in trials[2:6] if t["knob"] == knob], [t for t in trials[6:] if t["knob"] == knob]
        picked = first[0] if first[1]["objective"] <= first[0]["objective"] + SEARCH["min_gain"] else first[1]
        assert second[0]["value"] == picked["value"]
    assert selection["paper"] == {"masked_cpt.train.steps": 4, "merge.mu": "sum"}

    store = ArtifactStore(str(out / "seed-0" / "store"), cache_dir=out / "seed-0" / "cache")
    runs = sorted((out / "seed-0" / "outputs").glob("*.json"))
    dev = [p for p in runs if p.name.startswith("dev-")]
    test = [p for p in runs if p.name.startswith("test-")]
    assert len(dev) == 6 and {p.stem for p in test} == {
        "test-chosen", "test-paper", "test-ladder-k1-100-ability", "test-ladder-k1-100-delta",
        "test-ladder-k1-100-merge"}
    assert all(_split_read(store, p) == {"dev"} for p in dev)  # selection never read a test file
    assert all(_split_read(store, p) == {"bench"} for p in test)

    table = json.loads((out / "test.json").read_text())["0"]["models"]
    models = {row["model"] for row in table}
    assert {"full_cpt", "maet (dev-chosen)", "maet (paper)", "LLM_A,L0 k1=100", "base+R(A) k1=100",
            "merge k1=100", "mindmerger-full_cpt", "mindmerger-maet"} <= models
    for row in table:  # every Δ with its paired interval, and the shuffled-gold control near 0
        for bench in ("mgsm", "msvamp"):
            d = row[bench]
            assert d["ci_low"] <= d["delta"] <= d["ci_high"]
        assert abs(row["shuffled"]) < 30
    norms = {row["family"]: row for row in json.loads((out / "test.json").read_text())["0"]["norms"]}
    assert {"q", "down", "embed", "lm_head", "norm"} <= set(norms)  # every family, with its base norm
    assert all(row["base"] > 0 and row["R_Lang mean"] <= row["R_Lang sum"] for row in norms.values())
    assert "over 1 seeds" in done.stdout
    kept = json.loads((out / "test.json").read_text())
    pairs = {(r["model"], r["vs"]): r for r in kept["0"]["pairs"]}  # MAET against full CPT, paired
    assert set(pairs) == {("maet (dev-chosen)", "full_cpt"), ("mindmerger-maet", "mindmerger-full_cpt"),
                          ("maet (paper)", "full_cpt")}
    assert all(d["ci_low"] <= d["delta"] <= d["ci_high"] for r in pairs.values() for d in (r["mgsm"], r["msvamp"]))

    def report() -> str:
        done = subprocess.run([sys.executable, "bench/science.py", "--phase", "report", "--out", str(out)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    printed = report()
    assert "| model | seed 0 | mean | above 0 |" in printed and "| maet (dev-chosen) vs full_cpt |" in printed
    del kept["0"]["pairs"]  # a seed tested before test.json kept the pairs: rebuilt from its store, the same
    (out / "test.json").write_text(json.dumps(kept))
    assert report() == printed
    for row in table:  # the docs' tables: every model, its interval as test.json has it
        d = row["mgsm"]
        assert f"| {row['model']} | {d['delta']:+.1f} [{d['ci_low']:+.1f}, {d['ci_high']:+.1f}] |" in printed
