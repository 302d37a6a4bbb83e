"""The store stays the truth with Prefect's cache above it, and identical runs make identical artifacts.

Two fresh `linguaforge run`s of one configuration into two stores give every artifact the same key and
the same digest. Then one store is damaged the ways a user or a disk does it (a flipped byte, a deleted
artifact folder, a deleted manifest) and the same run again re-makes exactly the damaged artifacts,
finishes green, and ends with the other store's bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from linguaforge.storage import ArtifactStore
from tests.flows.test_cli_run import TINY, _cli

pytestmark = pytest.mark.slow


def _config(root: Path) -> Path:
    data = json.loads(json.dumps(TINY))
    data["mindmerger"]["llms"] = ["merged"]  # enough stages of every kind, in half the time
    data["store"] = {"url": str(root / "store"), "cache_dir": str(root / "cache")}
    root.mkdir(parents=True)
    (root / "run.yaml").write_text(yaml.safe_dump(data))
    return root / "run.yaml"


def _contents(store: ArtifactStore) -> dict[tuple[str, str], str]:
    return {(m.kind, m.key): m.digest for m in store.list()}


def _committed(store: ArtifactStore) -> list[tuple[str, str]]:
    return [(e["kind"], e["key"]) for e in store.events(event="committed")]


def test_identical_runs_match_and_a_damaged_store_heals_itself(tmp_path, repo_root):
    configs = {name: _config(tmp_path / name) for name in ("a", "b")}
    stores = {}
    for name, config in configs.items():
        run = _cli("run", str(config), cwd=repo_root)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        stores[name] = ArtifactStore(str(tmp_path / name / "store"), cache_dir=tmp_path / name / "cache")
    reference = _contents(stores["b"])
    assert _contents(stores["a"]) == reference  # same keys, same bytes: tokenizers and headers included

    store = stores["a"]
    by_kind = {m.kind: m for m in store.list()}
    flipped, deleted, unmanifested = by_kind["delta"], by_kind["mask"], by_kind["report"]
    target = Path(store.root) / "delta" / flipped.key / "delta.safetensors"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    store.fs.rm(f"{store.root}/mask/{deleted.key}", recursive=True)
    (Path(store.root) / "report" / unmanifested.key / "manifest.json").unlink()
    before = _committed(store)

    again = _cli("run", str(configs["a"]), cwd=repo_root)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "re-making it" in again.stdout + again.stderr  # the run says what it re-made
    remade = _committed(store)[len(before):]
    assert set(remade) == {("delta", flipped.key), ("mask", deleted.key), ("report", unmanifested.key)}
    assert _contents(store) == reference
    assert all(store.damage(store.ref(kind, key)) is None for kind, key in reference)
