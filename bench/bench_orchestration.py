"""Benchmark: orchestration overhead, and resume after a failure in the last stage.

1. A fully cached re-run of the demo pipeline (every stage already committed): its wall time, and the
   orchestration overhead per stage beyond Prefect's fixed start-up, measured side by side with a flow
   that does nothing in the same kind of process (goal: <= 0.5 s per stage).
2. The run is killed (SIGKILL, the whole process group) while its last stage (the comparison report)
   is executing; the next run re-executes exactly one stage (goal: 1), counted from the store's
   execution records.

    python bench/bench_orchestration.py [--config configs/demo.yaml]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

from linguaforge.storage import ArtifactStore  # noqa: E402

EMPTY_FLOW = "from prefect import flow\nflow(name='empty')(lambda: None)()\n"


def env() -> dict:
    e = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "200"}
    e.pop("PREFECT_API_URL", None)
    return e


def timed(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env(), check=True, capture_output=True)
    return time.perf_counter() - began


def started(store: ArtifactStore) -> Counter:
    return Counter((e["kind"], e["key"]) for e in store.events(event="started"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--store", help="an existing store of this config's run (e.g. a copy of ./.linguaforge/store): "
                                        "skips the first run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-orch-") as tmp:
        data = yaml.safe_load(Path(args.config).read_text())
        data["store"] = {"url": args.store or f"{tmp}/store", "cache_dir": f"{tmp}/cache"}
        config = Path(tmp) / "run.yaml"
        config.write_text(yaml.safe_dump(data))
        run = [sys.executable, "-m", "linguaforge.flows.cli", "run", str(config)]
        first = timed(run)
        store = ArtifactStore(data["store"]["url"], cache_dir=f"{tmp}/cache-bench")
        stages = len(store.list())
        cached = min(timed(run) for _ in range(2))
        empty = min(timed([sys.executable, "-c", EMPTY_FLOW]) for _ in range(2))
        print(f"demo pipeline: {stages} stages; first run {first:.0f}s"
              + (" (on the given, already committed store)" if args.store else ""))
        print(f"  fully cached re-run: {cached:.1f}s; an empty flow in the same kind of process: {empty:.1f}s")
        print(f"  orchestration overhead per stage = ({cached:.1f} - {empty:.1f}) / {stages} = "
              f"{(cached - empty) / stages:.3f}s (goal <= 0.5s)")

        report = next(m for m in store.list("report"))
        store.delete("report", report.key)  # the last stage must run again; kill the run while it does
        before = started(store)
        victim = subprocess.Popen(run, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        reports_before = len(store.events(kind="report", event="started"))
        while len(store.events(kind="report", event="started")) == reports_before:
            if victim.poll() is not None:
                raise SystemExit("the run ended before its last stage could be interrupted")
            time.sleep(0.02)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        interrupted = not store.exists("report", report.key)
        before = started(store)
        timed(run)
        resumed = started(store) - before
        print(f"  resume after a kill in the last stage (report {'interrupted' if interrupted else 'had committed'}): "
              f"{sum(resumed.values())} stage(s) re-executed (goal: 1)")


if __name__ == "__main__":
    main()
