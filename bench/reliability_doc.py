"""docs/reliability.md from the tables the tests wrote (`make reliability-doc`).

Reads build/reliability/faults.json and s3_outage.json (tests/faults), build/reliability/bad_inputs.json
(tests/bad_inputs) and load.json (tests/load), and writes the fault matrix, the bad-input table and what is and is not promised. Run the suites first
(`make faults`, `pytest tests/bad_inputs`); a table whose suite did not run is reported as missing.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "reliability"

PROMISES = """## What is promised

- **The store is the truth.** A cached Prefect result is used only while the store still holds the artifact it
  points to with the recorded digest (`tasks.common.VerifiedCache`: manifest, sizes, and a re-hash of any file
  changed after its commit). A missing, replaced or altered artifact is re-made, and the run says so.
  `linguaforge verify [--repair]` re-hashes every byte; `linguaforge rm KIND/KEY` deletes the supported way.
- **A kill commits nothing partial.** An artifact exists only once its manifest is written, last and
  atomically; a killed writer's staging folder is removed by the next run that can prove its writer gone
  (its process ended on this host, or another host's heartbeat is older than the lease).
- **Nothing is deleted or overwritten that the command did not make.** A store carries a marker file; every
  command that deletes refuses a folder without it, deletes only inside the store and never through a link; a
  merge's output is swapped in whole (a kill leaves the old folder or the new one), locked while written, and never
  the folder of an input; output folders and files that hold someone else's data are refused.
- **Stops are clean.** Ctrl-C or SIGTERM: every loop stops at its next step, the flow run is marked Cancelled,
  no process is left behind (the temporary server dies with the CLI, SIGKILL included), exit 130 / 143.
- **Out of memory is handled, never retried unchanged** (smaller micro-batches with the same samples per step,
  resumed from the last checkpoint; smaller evaluation batches with the same outputs).
- **Resumes are exact.** Training resumes from its last complete checkpoint; the same configuration and seed
  give byte-identical artifacts and the same keys on every run and after every resume (on CPU).
- **Bad input is refused with one message** that names the input and what is wrong: no traceback (unless
  `--debug` or `LINGUAFORGE_DEBUG=1`), nothing committed, nothing written. A run configuration is checked
  whole, files it names included, before torch is imported (a typo is reported in well under a second).
- **Nothing is unpickled** from a store or a download: models with pickled weights only are refused by name
  (the official MindMerger mapping checkpoint is the one exception, read with `weights_only=True`), no hub code runs (`trust_remote_code` is never passed), credentials never reach
  manifests, logs, the Prefect database or messages (tests/security).

## What is not promised

- Bitwise equality on GPUs: CUDA kernels are not deterministic by default; on GPU, resumes are exact to the
  checkpoint, not to the bit.
- Hub ids and remote URLs are checked when the stage that reads them runs, not before the run (that needs
  the network); their errors are clear there too.
- Remote stores: the cheap check on a cache hit compares sizes, not hashes (a flipped byte in an S3 object
  is found when a stage reads it, or by `linguaforge verify`).
- An S3 endpoint that stays away: a commit tries its uploads `upload_attempts` times (4 by default, the client's
  own retries inside each, the wait doubling from 2 s) and then fails with a StoreError; the parts of an
  unfinished multipart upload stay in the bucket until its lifecycle rule removes them (they are not an
  artifact: no manifest). A full disk, and two processes committing one key at once, are covered by
  tests/storage/test_store.py.
"""


def _recorded(name: str):
    """A table a suite wrote into build/reliability/, or None when that suite has not run here."""
    path = BUILD / name
    return json.loads(path.read_text()) if path.exists() else None


def _not_run(suite: str, command: str) -> str:
    return f"*The {suite} has not run here (`{command}`).*"


def _faults() -> list[str]:
    if (rows := _recorded("faults.json")) is None:
        return [_not_run("fault suite", "make faults")]
    by_case: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_case[row["case"]].append(row)
    lines = ["| stage killed | kill points | killed mid-stage | committed artifacts damaged | "
             "bitwise equal after resume |", "|---|---|---|---|---|"]
    for case, items in by_case.items():
        killed = sum(r["outcome"] == "killed" for r in items)
        damaged = sum(r["damaged_committed"] for r in items)
        equal = sum(bool(r.get("bitwise_equal_after_resume")) for r in items)
        lines.append(f"| {case} | {len(items)} | {killed} | {damaged} | {equal} of {len(items)} |")
    return lines


def _bad_inputs() -> list[str]:
    if (rows := _recorded("bad_inputs.json")) is None:
        return [_not_run("bad-input suite", "pytest tests/bad_inputs")]
    clean = sum(r["exit"] != 0 and not r["traceback"] for r in rows)
    lines = [f"{clean} of {len(rows)} bad inputs refused cleanly (non-zero exit, one message, no traceback, "
             "nothing committed).", "", "| area | bad input | exit | message (start) |", "|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["area"]):
        message = re.sub(r"/tmp/pytest-of-[^/ ]+/pytest-\d+/[^/ ]+/", "…/", r["message"])
        message = message.removeprefix("linguaforge: ").replace("|", "\\|")[:220]
        lines.append(f"| {r['area']} | {r['case']} | {r['exit']} | {message} |")
    return lines


def _publish_kills() -> list[str]:
    if (rows := _recorded("publish_kills.json")) is None:
        return [_not_run("merge publish kill test", "pytest tests/flows/test_merge_transaction.py")]
    lines = ["| kill point | the output folder right after the kill | after the next merge |", "|---|---|---|"]
    return lines + [f"| {r['case']} | {r['outcome']} | {r['after_rerun']} |" for r in rows]


def _signals() -> list[str]:
    if (rows := _recorded("signals.json")) is None:
        return [_not_run("signal tests", "pytest tests/faults/test_signals.py")]
    lines = ["| command and signal | exit | stopped after | processes left |", "|---|---|---|---|"]
    return lines + [f"| {r['case']} | {r['exit']} | {r['seconds']} s | 0 |" for r in rows]


def _dask_worker_kill() -> list[str]:
    if (rows := _recorded("dask_worker_kill.json")) is None:
        return [_not_run("Dask worker kill test", "pytest tests/e2e/test_dask_runner.py")]
    lines = ["| fault | run completed | stage rerun on another worker | committed artifacts damaged | "
             "artifacts equal to a threads run |", "|---|---|---|---|---|"]
    return lines + [f"| {r['case']} | {'yes' if r['completed'] else 'no'} | {'yes' if r['rerun_elsewhere'] else 'no'} "
                    f"| {r['damaged_committed']} | {'yes' if r['equal_to_threads'] else 'no'} |" for r in rows]


def _environment() -> list[str]:
    if (rows := _recorded("environment.json")) is None:
        return [_not_run("full and read-only disk tests", "pytest tests/faults/test_environment.py (as root)")]
    lines = ["| fault | exit | traceback | message (start) |", "|---|---|---|---|"]
    for r in rows:
        message = re.sub(r"/tmp/pytest-of-[^/ ]+/pytest-\d+/[^/ ]+/", "…/", r["message"]).replace("|", "\\|")
        lines.append(f"| {r['case']} | {r['exit']} | {'yes' if r['traceback'] else 'no'} | {message} |")
    return lines


def _total() -> str:
    counts = {name: len(_recorded(name) or []) for name in ("bad_inputs.json", "faults.json", "s3_outage.json",
                                                            "publish_kills.json", "signals.json", "environment.json",
                                                            "dask_worker_kill.json")}
    return (f"{sum(counts.values())} bad inputs and faults in the tables below: "
            + ", ".join(f"{n} {name.removesuffix('.json').replace('_', ' ')}" for name, n in counts.items()) + ".")


def _s3_outage() -> list[str]:
    if (rows := _recorded("s3_outage.json")) is None:
        return [_not_run("S3 outage test", "pytest tests/faults/test_s3_outage.py")]
    lines = ["| fault | outcome | connection attempts while away |", "|---|---|---|"]
    return lines + [f"| {r['case']} | {r['outcome']} | {r['attempts_while_down']} |" for r in rows]


def _load() -> list[str]:
    if (figure := _recorded("load.json")) is None:
        return [_not_run("load test", "pytest tests/load")]
    return [f"{figure['runs']} flow runs started at once from {figure['processes']} processes on one Prefect server "
            f"and one store: states {figure['states']}, {figure['artifacts']} distinct artifacts (each asked for "
            f"twice), at most {figure['max_commits_per_key']} commit per key, 0 lost; {figure['seconds']} s in all. "
            f"Runs left behind by Prefect's client retrying a timed-out create (never started): "
            f"{figure.get('orphan_runs_from_client_retries', 0)}."]


def _whole_suite_under_load() -> list[str]:
    """What `make test-under-load` recorded (pytest's JUnit report, written by this project's own run)."""
    path = BUILD / "under-load.xml"
    if not path.exists():
        return [_not_run("whole suite beside the CPU hog", "make test-under-load")]
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests, failed = int(suite.get("tests")), int(suite.get("failures")) + int(suite.get("errors"))
    skipped, seconds = int(suite.get("skipped")), float(suite.get("time"))
    return [f"The whole suite beside a 2-process CPU hog on this machine's 2 cores ({suite.get('timestamp', '')[:10]}): "
            f"{tests - failed - skipped} passed, {failed} failed, {skipped} skipped in {seconds / 60:.0f} min."]


def main() -> None:
    text = ["# Reliability", "", "Generated by `make reliability-doc` from the tables the tests write; do not edit.", "",
            _total(), "", "## Fault injection (tests/faults)", "",
            "The whole `linguaforge run` process group is SIGKILLed a set delay after a stage of each kind "
            "started, then run again; the final store is compared with an uninterrupted run's.", "",
            *_faults(), "", "The S3 endpoint goes away in the middle of a commit's multipart upload (a TCP proxy in "
            "front of the real moto server resets every connection, and every new one while it is away):", "",
            *_s3_outage(), "", "A merge's output folder is published as one transaction (pipelines/publish.py); the merge is "
            "SIGKILLed at every point of the publish, into a folder that holds an older merge and a file of the user's:",
            "", *_publish_kills(), "", "Ctrl-C and SIGTERM (tests/faults/test_signals.py): the command stops within 30 s, "
            "marks its flow run Cancelled, and leaves no process behind (its temporary Prefect server included):", "",
            *_signals(), "", "The machine refuses mid-run (tests/faults/test_environment.py, tmpfs):", "",
            *_environment(), "", "A worker of the Dask runner (`orchestration.runner: dask`) dies mid-stage "
            "(tests/e2e/test_dask_runner.py):", "", *_dask_worker_kill(), "", "## Bad inputs (tests/bad_inputs)", "", *_bad_inputs(), "",
            "## Load (tests/load, make test-under-load)", "", *_load(), "", *_whole_suite_under_load(), "",
            PROMISES]
    (ROOT / "docs" / "reliability.md").write_text("\n".join(text))
    print(f"wrote {ROOT / 'docs' / 'reliability.md'}")


if __name__ == "__main__":
    main()
