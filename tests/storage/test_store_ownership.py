"""A store knows it is a store, and deletes only inside itself: the marker, links, staging owners and leases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from linguaforge.storage import ArtifactStore, StoreError
from linguaforge.storage.staging import OWNER_SUFFIX, Owner, StagingArea
from linguaforge.storage.store import STORE_MARKER, credential_paths, system_folder


def _commit(store: ArtifactStore, key: str = "a" * 24) -> Path:
    with store.writer("delta", key, stage="s", stage_version=1, params={}) as w:
        (w.path / "delta.safetensors").write_bytes(b"x" * 100)
    return Path(store.path("delta", key))


def test_a_new_store_gets_its_marker_and_a_foreign_folder_is_refused(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "c")
    marker = json.loads((tmp_path / "store" / STORE_MARKER).read_text())
    assert marker["format"] == "linguaforge.store/1" and not marker["adopted"]
    foreign = tmp_path / "x"
    (foreign / "app" / "1.0").mkdir(parents=True)
    (foreign / "app" / "1.0" / "manifest.json").write_text("{}")
    with pytest.raises(StoreError, match="not a linguaforge store's .*app/1.0 has no valid manifest.json"):
        ArtifactStore(str(foreign), cache_dir=tmp_path / "c")
    assert not (foreign / STORE_MARKER).exists()
    reader = ArtifactStore(str(foreign), cache_dir=tmp_path / "c", create=False)  # reading is harmless
    with pytest.raises(StoreError, match="not a linguaforge store .*refusing to delete"):
        reader.delete("app", "1.0")
    assert (foreign / "app" / "1.0" / "manifest.json").read_text() == "{}"
    assert store.is_marked()


def test_a_store_made_before_markers_is_adopted_by_a_run_but_not_by_a_reader(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "c")
    _commit(store)
    (tmp_path / "store" / STORE_MARKER).unlink()
    reader = ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "c", create=False)
    assert not reader.is_marked() and len(reader.list()) == 1
    ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "c")
    assert json.loads((tmp_path / "store" / STORE_MARKER).read_text())["adopted"] is True


@pytest.mark.parametrize("path", ["/", "/etc", "/usr/lib", "/var", "/proc/self", "~"])
def test_system_folders_are_never_stores(path):
    assert system_folder(path)
    with pytest.raises(StoreError, match="system folder"):
        ArtifactStore(path, create=False)


def test_an_ordinary_folder_is_not_a_system_folder(tmp_path):
    assert not system_folder(str(tmp_path / "store")) and not system_folder("/var/lib/linguaforge/store")


def test_a_symlinked_staging_folder_is_neither_swept_nor_written(tmp_path):
    store = ArtifactStore(str(tmp_path / "s"), cache_dir=tmp_path / "c")
    victim = tmp_path / "v"
    (victim / "old").mkdir(parents=True)
    os.utime(victim / "old", (time.time() - 3 * 86400,) * 2)
    (tmp_path / "s" / ".staging").rmdir() if (tmp_path / "s" / ".staging").exists() else None
    (tmp_path / "s" / ".staging").symlink_to(victim)
    ArtifactStore(str(tmp_path / "s"), cache_dir=tmp_path / "c", create=False).list()
    ArtifactStore(str(tmp_path / "s"), cache_dir=tmp_path / "c")  # a run's open sweeps: not through a link
    assert (victim / "old").is_dir()
    with pytest.raises(StoreError, match="symbolic link"):
        _commit(store)
    assert [p.name for p in victim.iterdir()] == ["old"]


def _staged(area: StagingArea, owner: Owner | None, heartbeat_age_s: float) -> Path:
    folder = area.create() / f"delta-{os.urandom(4).hex()}"
    (folder / "part").mkdir(parents=True)
    if owner is not None:
        record = folder.with_name(folder.name + OWNER_SUFFIX)
        record.write_text(json.dumps(owner.__dict__))
        os.utime(record, (time.time() - heartbeat_age_s,) * 2)
    return folder


def test_the_sweep_removes_only_writers_proven_gone(tmp_path):
    area = StagingArea(tmp_path / "store" / ".staging", tmp_path / "store", lease_s=3600)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    me = Owner.current()
    cases = {
        "this host, process gone": (Owner(me.host, int(dead.stdout), "1"), 0, True),
        "this host, alive": (me, 0, False),
        "this host, pid reused by a later process": (Owner(me.host, me.pid, "0"), 0, True),
        "other host, 25 h old, fresh heartbeat": (Owner("gpu-node-7", 4242, "9"), 30, False),
        "other host, heartbeat beyond the lease": (Owner("gpu-node-7", 4243, "9"), 3 * 3600, True),
        "no owner record (not ours)": (None, 30 * 86400, False),
    }
    folders = {name: _staged(area, owner, age) for name, (owner, age, _) in cases.items()}
    for folder in folders.values():  # their folders are old: age alone never condemns one
        os.utime(folder, (time.time() - 25 * 3600,) * 2)
    area.sweep()
    for name, (_, _, gone) in cases.items():
        assert folders[name].exists() != gone, name
    assert area.unowned() == [folders["no owner record (not ours)"].name]


def test_an_owner_record_killed_before_its_text_was_written_is_swept_by_its_name(tmp_path):
    """A SIGKILL between creating the record's partial file and writing it leaves an empty file: the owner in its
    name still proves the writer gone; an empty one of a live writer, or one named by nobody, stays."""
    from linguaforge.storage.staging import _partial_record

    area = StagingArea(tmp_path / "store" / ".staging", tmp_path / "store", lease_s=3600)
    root = area.create()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    me = Owner.current()
    gone = _partial_record(root / f"eval-1{OWNER_SUFFIX}", Owner(me.host, int(dead.stdout), "1"))
    alive = _partial_record(root / f"eval-2{OWNER_SUFFIX}", me)
    nameless = root / f"eval-3{OWNER_SUFFIX}.0123abcd.partial"
    for empty in (gone, alive, nameless):
        empty.touch()
    area.sweep()
    assert not gone.exists() and alive.exists() and nameless.exists()


def test_a_writer_keeps_its_heartbeat_and_releases_its_record(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "c")
    with store.staging_folder("x-") as folder:
        record = folder.with_name(folder.name + OWNER_SUFFIX)
        assert json.loads(record.read_text())["pid"] == os.getpid()
        assert store.sweep_staging() == []  # alive
    assert not folder.exists() and not record.exists()


def test_verify_reports_links_and_unreadable_manifests_and_repair_leaves_links(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "c")
    linked = _commit(store, "b" * 24)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x" * 100)
    (linked / "delta.safetensors").unlink()
    (linked / "delta.safetensors").symlink_to(outside)  # same bytes: only the link gives it away
    truncated = _commit(store, "c" * 24)
    manifest = truncated / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:40])
    damaged = store.audit()
    assert "symbolic link" in damaged[f"delta/{'b' * 24}"]
    assert "not valid" in damaged[f"delta/{'c' * 24}"]
    assert [m.key for m in store.list()] == ["b" * 24] and set(store.unreadable()) == {f"delta/{'c' * 24}"}
    store.delete("delta", "b" * 24)  # the link goes, never what it points to
    assert not linked.exists() and outside.read_bytes() == b"x" * 100
    store.delete("delta", "c" * 24)
    assert not truncated.exists()
    elsewhere = _commit(ArtifactStore(str(tmp_path / "other"), cache_dir=tmp_path / "c"), "d" * 24)
    Path(store.path("delta", "d" * 24)).symlink_to(elsewhere)  # a whole artifact folder that is a link
    assert "symbolic link" in store.audit()[f"delta/{'d' * 24}"]
    with pytest.raises(StoreError, match="symbolic link"):
        store.delete("delta", "d" * 24)
    assert (elsewhere / "manifest.json").exists()


def test_manifest_entries_that_escape_their_artifact_are_damage(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "c")
    folder = _commit(store)
    data = json.loads((folder / "manifest.json").read_text())
    data["files"]["../../../etc/passwd"] = data["files"].pop("delta.safetensors")
    (folder / "manifest.json").write_text(json.dumps(data))
    assert "not a plain relative path" in store.audit()[f"delta/{'a' * 24}"]


def test_credentials_are_found_at_any_depth():
    options = {"endpoint_url": "http://minio:9000", "client_kwargs": {"region_name": "x", "aws_secret_access_key": "s"},
               "config_kwargs": [{"Password": "p"}], "token": None}
    assert credential_paths(options) == ["client_kwargs.aws_secret_access_key", "config_kwargs[0].Password"]
    with pytest.raises(StoreError, match="client_kwargs.aws_secret_access_key"):
        ArtifactStore("memory://nested-secret", storage_options=options)
