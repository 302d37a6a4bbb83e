"""How linguaforge's own costs grow: evaluation-only runs over 10, 20 and 50 languages × 3 benchmarks × 4 tiny
models (generated data), each size in a fresh process on a temporary Prefect server.

Per size: units, wall time, the units' own work (from the store's started → committed events), orchestration
overhead per unit ((wall − own work) / units, with the fan-out run one unit at a time so that the two add up), peak
memory of the flow process, the store's listing time, the report's building time, and Prefect API calls per unit
(every HTTP request the flow process sends to the API, counted at httpx). Goal: overhead per unit flat within
1.2× from 10 to 50 languages; flow memory sublinear in the units.

    python bench/bench_scale.py [--languages 10,20,50] [--models 4] [--items 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "bench"
BENCHMARKS = ("mgsm", "xcsqa", "xnli")


def languages(n: int) -> list[str]:
    from linguaforge.pipelines.languages import ISO_639_1

    others = [code for code in ISO_639_1 if code != "en"]
    return ["en", *others[: n - 1]]


def write_benchmarks(folder: Path, codes: list[str], items: int) -> dict[str, Path]:
    """MGSM's TSV per language, X-CSQA's dev.jsonl per language, one XNLI table: the official file shapes."""
    mgsm, xcsqa, xnli = folder / "mgsm", folder / "xcsqa", folder / "xnli"
    for path in (mgsm, xcsqa, xnli):
        path.mkdir(parents=True, exist_ok=True)
    rows = ["language\tgold_label\tsentence1\tsentence2"]
    for code in codes:
        (mgsm / f"mgsm_{code}.tsv").write_text("".join(f"{code} {i} plus {i} is\t{2 * i}\n" for i in range(items)))
        (xcsqa / code).mkdir(exist_ok=True)
        (xcsqa / code / "dev.jsonl").write_text("".join(json.dumps({
            "id": f"{code}-{i}", "answerKey": "AB"[i % 2],
            "question": {"stem": f"{code} question {i}", "choices": [{"label": "A", "text": "yes"},
                                                                    {"label": "B", "text": "no"}]}}) + "\n"
            for i in range(items)))
        labels = ("entailment", "neutral", "contradiction")
        rows += [f"{code}\t{labels[i % 3]}\t{code} premise {i}\t{code} hypothesis {i}" for i in range(items)]
    (xnli / "xnli.test.tsv").write_text("\n".join(rows) + "\n")
    return {"mgsm": mgsm, "xcsqa": xcsqa, "xnli": xnli}


def build_models(folder: Path, count: int) -> list[Path]:
    """`count` tiny Llama models of different seeds sharing one tokenizer (gpu_check's builders)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from gpu_check import build_models as build_one
    from transformers import AutoModelForCausalLM, AutoTokenizer

    first, _ = build_one(folder, hidden=32, layers=1)
    paths = [first]
    for i in range(1, count):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_config(AutoModelForCausalLM.from_pretrained(first).config)
        path = folder / f"llm{i}"
        model.save_pretrained(path)
        AutoTokenizer.from_pretrained(first).save_pretrained(path)
        paths.append(path)
    return paths


class ApiCalls:
    """Counts the HTTP requests this process sends to the Prefect API (sync and async httpx clients)."""

    def __init__(self, url: str):
        import httpx

        self.url, self.count = url, 0
        sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send
        calls = self

        def counted(self, request, *a, **k):
            calls.count += str(request.url).startswith(calls.url)
            return sync_send(self, request, *a, **k)

        async def counted_async(self, request, *a, **k):
            calls.count += str(request.url).startswith(calls.url)
            return await async_send(self, request, *a, **k)

        httpx.Client.send, httpx.AsyncClient.send = counted, counted_async


def child(n: int, models: int, items: int, threads: int, work: Path) -> dict:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from linguaforge.flows.config import RunConfig
    from linguaforge.flows.evaluate import evaluate
    from linguaforge.flows.server import TemporaryServer
    from linguaforge.storage import ArtifactStore
    from linguaforge.tasks.common import Source
    from linguaforge.tasks.evaluate import EvalModel

    codes = languages(n)
    data = write_benchmarks(work / f"bench{n}", codes, items)
    llms = build_models(work / "models", models) if not (work / "models" / "llm").exists() else \
        [work / "models" / "llm", *(work / "models" / f"llm{i}" for i in range(1, models))]
    corpus = work / "corpus.jsonl"
    corpus.write_text('{"text": "unused: an evaluation-only run"}\n')
    cfg = RunConfig.model_validate({
        "name": f"scale{n}", "demo": None, "pivot_language": "en", "languages": codes[1:],
        "models": {"base_llm": str(llms[0]), "encoder": str(llms[0])},
        "corpora": {"ability": {"uri": str(corpus)}, "general": {c: {"uri": str(corpus)} for c in codes}},
        "store": {"url": str(work / f"store{n}"), "cache_dir": str(work / f"cache{n}")},
        "tracking": {"loggers": []}, "mindmerger": {"enabled": False}, "orchestration": {"max_parallel": threads},
        "evaluation": {"batch_size": 8, "benchmarks": [
            {"name": "mgsm", "data": str(data["mgsm"]), "max_new_tokens": 4},
            {"name": "xcsqa", "data": str(data["xcsqa"]), "scoring": "loglik"},
            {"name": "xnli", "data": str(data["xnli"]), "scoring": "loglik"}]},
    })
    eval_models = [EvalModel(name=f"m{i}", base=None if i == 0 else "m0", source=Source(uri=str(p)))
                   for i, p in enumerate(llms)]
    server = TemporaryServer(work / f"server{n}.log")
    server.start(timeout_s=180)
    try:
        calls = ApiCalls(server.url)
        with temporary_settings(updates={PREFECT_API_URL: server.url}):
            began = time.perf_counter()
            evaluate(cfg, eval_models)
            wall = time.perf_counter() - began
    finally:
        server.stop()
    store = ArtifactStore(cfg.store.url, cache_dir=cfg.store.cache_dir)
    listed = time.perf_counter()
    units = len(store.list("eval"))
    listing = time.perf_counter() - listed
    spans = _spans(store)
    own = sum(seconds for stage, seconds in spans if stage == "evaluate_unit")
    report = sum(seconds for stage, seconds in spans if stage == "comparison_report")
    return {"languages": n, "units": units, "wall_s": round(wall, 1), "own_work_s": round(own, 1),
            # units at once overlap their own work: wall less own work is then no overhead
            "overhead_per_unit_s": round((wall - own - report) / units, 3) if threads == 1 else None,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "listing_s": round(listing, 3), "report_s": round(report, 2),
            "api_calls_per_unit": round(calls.count / units, 1), "threads": threads}


def _spans(store) -> list[tuple[str, float]]:
    """(stage, seconds from its start to its commit) of every stage execution, from the store's events."""
    started = {(e["kind"], e["key"]): e for e in store.events(event="started")}
    out = []
    for e in store.events(event="committed"):
        if (s := started.get((e["kind"], e["key"]))) is not None:
            out.append((e["stage"], (datetime.fromisoformat(e["at"]) - datetime.fromisoformat(s["at"])).total_seconds()))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--languages", default="10,20,50")
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--items", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="orchestration.max_parallel: units at once in the "
                        "flow's process (1: the overhead is wall time less the units' own work; 4096: as good as "
                        "Prefect's unbounded pool, to see what the bound saves in memory)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.models, args.items, args.threads, Path(args.work))))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as work:
        for n in (int(x) for x in args.languages.split(",")):
            env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
            done = subprocess.run([sys.executable, __file__, "--child", str(n), "--work", work, "--models",
                                   str(args.models), "--items", str(args.items), "--threads", str(args.threads)],
                                  capture_output=True, text=True, env=env, cwd=ROOT)
            if done.returncode != 0:
                print(done.stdout[-3000:], done.stderr[-5000:])
                return 1
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    _table(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "scale.json").write_text(json.dumps(rows, indent=1))
    return 0


def _table(rows: list[dict]) -> None:
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in columns) + " |")
    first, last = rows[0], rows[-1]
    memory = (last["peak_rss_mib"] / first["peak_rss_mib"]) / (last["units"] / first["units"])
    if first["overhead_per_unit_s"] is not None:
        ratio = last["overhead_per_unit_s"] / max(first["overhead_per_unit_s"], 1e-9)
        print(f"overhead per unit, {last['languages']} vs {first['languages']} languages: {ratio:.2f}x (goal ≤ 1.2x)")
    print(f"flow memory grew {last['peak_rss_mib'] / first['peak_rss_mib']:.2f}x for {last['units'] / first['units']:.1f}x "
          f"the units ({memory:.2f} per unit ratio; sublinear below 1)")


if __name__ == "__main__":
    sys.exit(main())
