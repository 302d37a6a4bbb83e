"""A new stage touches at most four files: its settings, its science, its task with its spec, and the flow that
calls it. Shown as the merge-method test shows a method is one file: the code is copied into a scratch tree, a made-up
stage (token statistics of every prepared corpus) is added there, and a real `linguaforge run` of that tree runs it,
caches it, counts it in the live display's plan, lists it in the run's outputs and checks its key against its
settings with the key test's own machinery; no other file of the tree changes."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.flows.test_cli_run import TINY

pytestmark = pytest.mark.slow
LAYERS = ("flows", "tasks", "pipelines", "storage")

# its settings: a section of corpus preparation's, which corpus preparation itself declares it does not read
SETTINGS_EDITS = [
    ("class CorpusPrepConfig(Settings):\n",
     '''class CorpusStatsConfig(Settings):
    """The token statistics of every prepared corpus: how many of the most frequent tokens to list."""

    top_k: int = Field(5, ge=1, le=1000, description="Most frequent tokens listed per corpus.")


class CorpusPrepConfig(Settings):
    key_exclude: ClassVar[frozenset[str]] = frozenset({"stats"})  # read by the corpus_stats stage alone
    stats: CorpusStatsConfig = Field(default_factory=CorpusStatsConfig)
'''),
]

SCIENCE = '''"""Token statistics of a packed corpus: its blocks, its tokens, its distinct tokens and the most frequent ones."""

from collections import Counter
from pathlib import Path

from linguaforge.pipelines.training.causal_lm import PackedBlocks


def token_stats(folder: Path, top_k: int) -> dict:
    blocks = PackedBlocks.from_dir(folder)
    counts = Counter(int(t) for i in range(len(blocks)) for t in blocks.batch([i])["input_ids"].flatten())
    return {"blocks": len(blocks), "tokens": sum(counts.values()), "distinct": len(counts),
            "top": [[token, n] for token, n in counts.most_common(top_k)]}
'''

TASK = '''"""The corpus statistics stage: one cached artifact per prepared corpus."""

from pathlib import Path

from linguaforge.pipelines.corpus_stats import token_stats
from linguaforge.pipelines.settings import CorpusStatsConfig, key_params
from linguaforge.storage import ArtifactRef, ArtifactWriter
from linguaforge.tasks.common import RunContext, Source, StageSpec, open_store, run_stage, stage_task

STATS_FILE = "stats.json"


def stats_params(ctx: RunContext, settings: CorpusStatsConfig) -> dict:
    return {"stats": key_params(settings)}


CORPUS_STATS = StageSpec("corpus_stats", 1, "stats", files=(STATS_FILE,), settings=CorpusStatsConfig,
                         params=stats_params, run_name="corpus_stats-{name}")


@stage_task(CORPUS_STATS)
def corpus_stats(ctx: RunContext, settings: CorpusStatsConfig, name: str, corpus: ArtifactRef) -> ArtifactRef:
    store = open_store(ctx.store)
    source = Source.of(corpus)

    def build(w: ArtifactWriter) -> None:
        w.write_json(STATS_FILE, token_stats(Path(source.local(store)), settings.top_k))

    return run_stage(store, CORPUS_STATS, params=CORPUS_STATS.params(ctx, settings), sources={"corpus": source},
                     build=build)
'''

# the flow that calls it: a statistics stage per corpus beside the probes, its outputs under their own label; and
# the plan the live display counts
FLOW_EDITS = [
    ("from linguaforge.tasks.corpus import corpus_mixture, corpus_prep\n",
     "from linguaforge.tasks.corpus import corpus_mixture, corpus_prep\n"
     "from linguaforge.tasks.corpus_stats import corpus_stats\n"),
    ("    return RunOutputs(masks={name: f.result() for name, f in probes.items()},\n",
     "    stats = {f\"corpus_stats/{n}\": corpus_stats(ctx, cfg.corpus_prep.stats, n, r) for n, r in corpora.items()}\n"
     "    return RunOutputs(more=stats, masks={name: f.result() for name, f in probes.items()},\n"),
    ("    add(corpus_prep, corpora), add(corpus_mixture)\n",
     "    add(corpus_prep, corpora), add(corpus_mixture), add(corpus_stats, corpora + 1)\n"),
]


def _edit(path: Path, edits: list[tuple[str, str]]) -> None:
    text = path.read_text()
    for old, new in edits:
        assert old in text, f"{path.name} no longer holds the line this test edits: {old!r}"
        text = text.replace(old, new)
    path.write_text(text)


def _changed_files(tree: Path, repo: Path) -> set[str]:
    changed = set()
    for layer in LAYERS:
        for path in (tree / layer).rglob("*.py"):
            original = repo / layer / path.relative_to(tree / layer)
            if not original.exists() or not filecmp.cmp(path, original, shallow=False):
                changed.add(str(path.relative_to(tree)))
    return changed


def test_a_new_stage_touches_four_files(tmp_path, repo_root):
    tree = tmp_path / "tree" / "linguaforge"
    tree.mkdir(parents=True)
    (tree / "__init__.py").write_text("")
    for layer in LAYERS:
        shutil.copytree(repo_root / layer, tree / layer, ignore=shutil.ignore_patterns("__pycache__"))
    _edit(tree / "pipelines" / "settings.py", SETTINGS_EDITS)
    (tree / "pipelines" / "corpus_stats.py").write_text(SCIENCE)
    (tree / "tasks" / "corpus_stats.py").write_text(TASK)
    _edit(tree / "flows" / "stages.py", FLOW_EDITS)
    assert _changed_files(tree, repo_root) == {"pipelines/settings.py", "pipelines/corpus_stats.py",
                                               "tasks/corpus_stats.py", "flows/stages.py"}

    data = json.loads(json.dumps(TINY))
    data["corpus_prep"]["stats"] = {"top_k": 3}  # the user sets it as any other setting
    data |= {"mindmerger": {"enabled": False}, "evaluation": {"enabled": False},
             "store": {"url": str(tmp_path / "store"), "cache_dir": str(tmp_path / "cache")}}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PYTHONPATH": str(tree.parent)}
    run = subprocess.run([sys.executable, "-m", "linguaforge.flows.cli", "run", str(config), "--outputs",
                          str(tmp_path / "outputs.json")], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    check = f"""
import json, sys
from collections import Counter
import linguaforge.tasks.corpus_stats as stats_task
assert stats_task.__file__.startswith({str(tree)!r}), stats_task.__file__
from linguaforge.flows.config import load_config
from linguaforge.flows.stages import planned_stages
from linguaforge.storage import ArtifactStore
from linguaforge.tasks.common import STAGE_SPECS
store = ArtifactStore({str(tmp_path / "store")!r}, cache_dir={str(tmp_path / "reader")!r})
committed = Counter(m.stage for m in store.list())
assert planned_stages(load_config({str(config)!r})) == committed, (planned_stages(load_config({str(config)!r})), committed)
first = [m for m in store.list("stats") if m.params["stats"]["top_k"] == 3][0]
spec = STAGE_SPECS["corpus_stats"]
settings = spec.settings()
assert spec.params(None, settings) != spec.params(None, settings.model_copy(update={{"top_k": 6}}))
print(json.dumps({{"stats": committed["corpus_stats"], "tokens": json.loads(store.open((first.kind, first.key)).path("stats.json").read_text())["tokens"]}}))
"""
    checked = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    result = json.loads(checked.stdout.strip().splitlines()[-1])
    assert result["stats"] == len(TINY["languages"]) + 3 and result["tokens"] > 0  # every corpus, the mixture too
    listed = json.loads((tmp_path / "outputs.json").read_text())["more"]
    assert sorted(listed) == sorted(f"corpus_stats/{n}" for n in ["ability", "mixture", "general-en", "general-de",
                                                                   "general-sw"])
