"""The artifact store on a local folder, memory://, and a real S3 endpoint (moto's server on 127.0.0.1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file

from linguaforge.storage import (
    ArtifactRef,
    ArtifactStore,
    IntegrityError,
    NotCommittedError,
    StoreError,
    artifact_key,
)


def _store(kind: str, tmp_path: Path, s3_bucket: str | None = None) -> ArtifactStore:
    cache = tmp_path / "cache"
    if kind == "local":
        return ArtifactStore(str(tmp_path / "store"), cache_dir=cache)
    if kind == "memory":
        return ArtifactStore(f"memory://lf-{tmp_path.name}", cache_dir=cache)
    return ArtifactStore(f"s3://{s3_bucket}/runs", cache_dir=cache)


@pytest.fixture(params=["local", "memory", "s3"])
def store(request, tmp_path):
    bucket = request.getfixturevalue("s3_bucket") if request.param == "s3" else None
    return _store(request.param, tmp_path, bucket)


def _commit_sample(store: ArtifactStore, params=None) -> ArtifactRef:
    params = params or {"block_size": 8}
    key = store.key("corpus", 1, params, {})
    with store.writer("corpus", key, stage="corpus_prep", stage_version=1, params=params) as w:
        w.write_json("stats.json", {"tokens": 24})
        (w.path / "blocks").mkdir()
        pq.write_table(pa.table({"input_ids": [[1, 2, 3], [4, 5, 6]]}), w.path / "blocks" / "part-0.parquet")
        save_file({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, w.path / "t.safetensors")
        w.metrics["tokens"] = 24
    return w.ref


def test_key_is_deterministic_and_sensitive_to_every_part():
    a = ArtifactRef(kind="x", key="k", uri="u", digest="d1")
    b = ArtifactRef(kind="x", key="k", uri="other-uri", digest="d1")
    base = artifact_key("probe", 1, {"k1": 5.0, "g": "row"}, {"corpus": a})
    assert base == artifact_key("probe", 1, {"g": "row", "k1": 5.0}, {"corpus": b})  # order and URI don't matter
    assert len({
        base,
        artifact_key("probe", 2, {"k1": 5.0, "g": "row"}, {"corpus": a}),
        artifact_key("probe", 1, {"k1": 4.0, "g": "row"}, {"corpus": a}),
        artifact_key("probe", 1, {"k1": 5.0, "g": "row"}, {"corpus": a.model_copy(update={"digest": "d2"})}),
        artifact_key("masked", 1, {"k1": 5.0, "g": "row"}, {"corpus": a}),
    }) == 5


def test_commit_then_read_back_every_format(store):
    assert not store.exists("corpus", store.key("corpus", 1, {"block_size": 8}, {}))
    ref = _commit_sample(store)
    assert store.exists(ref.kind, ref.key)
    reader = store.open(ref)
    assert reader.read_json("stats.json") == {"tokens": 24}
    assert reader.read_table("blocks/part-0.parquet").column("input_ids").to_pylist() == [[1, 2, 3], [4, 5, 6]]
    assert torch.equal(reader.load_tensors("t.safetensors")["w"], torch.arange(6.0).reshape(2, 3))
    manifest = reader.manifest
    assert set(manifest.files) == {"stats.json", "blocks/part-0.parquet", "t.safetensors"}
    assert manifest.params == {"block_size": 8} and manifest.metrics == {"tokens": 24}
    assert manifest.stage == "corpus_prep" and manifest.code_version
    assert (reader.dir() / "blocks" / "part-0.parquet").exists()
    # same inputs, same key: the second commit is recognised without writing anything
    assert store.ref("corpus", ref.key).digest == ref.digest


def test_exception_inside_writer_commits_nothing(store):
    key = store.key("corpus", 1, {"x": 1}, {})
    with pytest.raises(ValueError), store.writer("corpus", key, stage="s", stage_version=1, params={"x": 1}) as w:
        (w.path / "half.bin").write_bytes(b"\0" * 100)
        raise ValueError("stage failed")
    assert not store.exists("corpus", key)
    assert store.list() == []
    with pytest.raises(NotCommittedError, match=f"corpus/{key} is not committed"):
        store.open(("corpus", key))


def test_flipped_byte_and_truncation_are_caught(tmp_path):
    store = _store("local", tmp_path)
    ref = _commit_sample(store)
    target = Path(ref.uri) / "t.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01
    target.write_bytes(bytes(data))
    fresh = ArtifactStore(store.url, cache_dir=tmp_path / "cache2")  # no in-process memo of earlier reads
    with pytest.raises(IntegrityError, match=r"corpus/\w+/t.safetensors: sha256 .* does not match"):
        fresh.open(ref).load_tensors("t.safetensors")
    (Path(ref.uri) / "stats.json").write_text("{}")
    with pytest.raises(IntegrityError, match="truncated or altered"):
        fresh.open(ref).read_json("stats.json")


def test_flipped_byte_in_s3_object_is_caught(s3_bucket, tmp_path):
    store = _store("s3", tmp_path, s3_bucket)
    ref = _commit_sample(store)
    path = f"{store.root}/{ref.kind}/{ref.key}/t.safetensors"
    data = bytearray(store.fs.cat_file(path))
    data[10] ^= 0xFF
    store.fs.pipe_file(path, bytes(data))
    with pytest.raises(IntegrityError, match="does not match"):
        ArtifactStore(store.url, cache_dir=tmp_path / "fresh-cache").open(ref).path("t.safetensors")


def test_remote_reads_go_through_a_verified_cache(s3_bucket, tmp_path):
    store = _store("s3", tmp_path, s3_bucket)
    ref = _commit_sample(store)
    local = store.open(ref).path("t.safetensors")
    assert local.is_relative_to(tmp_path / "cache")
    store.fs.rm_file(f"{store.root}/{ref.kind}/{ref.key}/t.safetensors")  # the cache now serves it alone
    assert store.open(ref).path("t.safetensors") == local
    local.write_bytes(b"garbage")  # a damaged cache entry is re-fetched, and the remote is gone: clear error
    with pytest.raises(IntegrityError, match="missing from s3://"):
        store.open(ref).path("t.safetensors")


def test_listing_a_runs_artifacts(store):
    refs = [_commit_sample(store, {"block_size": n}) for n in (8, 16, 32)]
    listed = store.list()
    assert {m.key for m in listed} == {r.key for r in refs} and len(listed) == 3
    assert [m.created_at for m in listed] == sorted(m.created_at for m in listed)
    assert {m.kind for m in listed} == {"corpus"}
    assert store.list("nothing-here") == []


def test_commits_by_another_client_are_seen_at_once_on_s3(s3_bucket, tmp_path):
    """Two machines on one bucket: listings, existence checks and checkpoints are never served from a stale
    directory cache of the reading client."""
    reader = ArtifactStore(f"s3://{s3_bucket}/shared", cache_dir=tmp_path / "r")
    writer = ArtifactStore(f"s3://{s3_bucket}/shared", cache_dir=tmp_path / "w")
    assert reader.list() == [] and reader.events() == []
    area = reader.checkpoints("corpus", "k" * 24)
    assert area.steps() == []
    ref = _commit_sample(writer)
    with writer.checkpoints("corpus", "k" * 24).new(7) as folder:
        (folder / "state.json").write_text("{}")
    writer.record_event("corpus", ref.key, "started", stage="x")
    assert [m.key for m in reader.list()] == [ref.key] and reader.exists("corpus", ref.key)
    assert [e["event"] for e in reader.events()] == ["started"]
    assert area.steps() == [7]


def test_multipart_upload_to_s3(s3_bucket, tmp_path):
    store = ArtifactStore(f"s3://{s3_bucket}/big", cache_dir=tmp_path / "c", multipart_chunksize=5 * 2**20)
    payload = os.urandom(11 * 2**20 + 123)
    with store.writer("model", "k" * 24, stage="s", stage_version=1, params={}) as w:
        (w.path / "weights.bin").write_bytes(payload)
    info = store.fs.info(f"{store.root}/model/{'k' * 24}/weights.bin")
    assert info["size"] == len(payload)
    assert info["ETag"].strip('"').endswith("-3")  # three parts of 5, 5 and 1 MiB
    assert ArtifactStore(store.url, cache_dir=tmp_path / "c2").open(w.ref).path("weights.bin").read_bytes() == payload


def test_s3_without_credentials_is_a_clear_error(s3_endpoint, s3_bucket, monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(StoreError, match=rf"s3://{s3_bucket}/runs is not accessible.*no usable credentials"):
        ArtifactStore(f"s3://{s3_bucket}/runs", cache_dir=tmp_path)


def test_missing_bucket_and_inline_credentials_are_refused(s3_env, tmp_path):
    with pytest.raises(StoreError, match="bucket or folder 'no-such-bucket' does not exist"):
        ArtifactStore("s3://no-such-bucket/x", cache_dir=tmp_path)
    with pytest.raises(StoreError, match="credentials .*secret.* must not be given in storage_options"):
        ArtifactStore("s3://b/x", storage_options={"secret": "s3cr3t"})


def test_stale_files_without_manifest_are_invisible_and_replaced(tmp_path):
    store = _store("local", tmp_path)
    key = store.key("corpus", 1, {"block_size": 8}, {})
    stale = Path(store.root) / "corpus" / key
    stale.mkdir(parents=True)
    (stale / "stats.json").write_text('{"tokens": -1}')
    (stale / "leftover.bin").write_bytes(b"x")
    assert not store.exists("corpus", key) and store.list() == []
    ref = _commit_sample(store)
    assert ref.key == key
    assert store.open(ref).read_json("stats.json") == {"tokens": 24}
    assert not (stale / "leftover.bin").exists()


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from linguaforge.storage import ArtifactStore
    store = ArtifactStore(sys.argv[1], cache_dir=sys.argv[2])
    with store.writer("model", "killed" + "0" * 18, stage="s", stage_version=1, params={}) as w:
        for i in range(20):
            (w.path / f"shard-{i}.bin").write_bytes(b"\\1" * 200_000)
        print("READY", flush=True)
        time.sleep(120)
""")


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_writer_killed_before_manifest_leaves_nothing_visible(kind, tmp_path, request, repo_root):
    bucket = request.getfixturevalue("s3_bucket") if kind == "s3" else None
    store = _store(kind, tmp_path, bucket)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, store.url, str(tmp_path / "cache")],
                            stdout=subprocess.PIPE, text=True, cwd=repo_root, env={**os.environ})
    try:
        assert proc.stdout.readline().strip() == "READY"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not store.exists("model", "killed" + "0" * 18)
    assert store.list() == []
    staging = (Path(store.root) if kind == "local" else tmp_path / "cache") / ".staging"
    assert [p.name for p in staging.iterdir()], "the killed writer left its staging folder (it cannot clean up)"
    ArtifactStore(store.url, cache_dir=tmp_path / "cache")  # the next process to open the store sweeps it
    assert list(staging.iterdir()) == []


def test_staging_of_a_live_writer_is_kept(tmp_path, repo_root):
    store = _store("local", tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, store.url, str(tmp_path / "cache")],
                            stdout=subprocess.PIPE, text=True, cwd=repo_root)
    try:
        assert proc.stdout.readline().strip() == "READY"
        ArtifactStore(store.url, cache_dir=tmp_path / "cache")
        folders = [p for p in (Path(store.root) / ".staging").iterdir() if p.is_dir()]
        assert len(folders) == 1  # its writer is still at work
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_damage_names_what_is_wrong_and_clean_artifacts_pass(tmp_path):
    store = _store("local", tmp_path)
    ref = _commit_sample(store)
    assert store.damage(ref) is None
    target = Path(ref.uri) / "t.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01  # same size: only the hash can tell
    target.write_bytes(bytes(data))
    fresh = ArtifactStore(store.url, cache_dir=tmp_path / "cache")
    assert "t.safetensors" in fresh.damage(ref) and "does not match" in fresh.damage(ref)
    target.unlink()
    assert "'t.safetensors' is missing" in fresh.damage(ref)
    (Path(ref.uri) / "manifest.json").unlink()
    assert "not committed" in fresh.damage(ref)
    other = _commit_sample(store, {"block_size": 99})
    assert "different version" in store.damage(ref.model_copy(update={"key": other.key}))


def test_damage_on_s3_checks_presence_and_size(s3_bucket, tmp_path):
    store = _store("s3", tmp_path, s3_bucket)
    ref = _commit_sample(store)
    assert store.damage(ref) is None
    store.fs.pipe_file(f"{store.root}/{ref.kind}/{ref.key}/stats.json", b"{}")
    assert "bytes, the manifest says" in store.damage(ref)


def test_checkpoints_skip_incomplete_and_damaged(store):
    area = store.checkpoints("train", "k" * 24)
    assert area.latest() is None
    for step in (10, 20):
        with area.new(step) as d:
            (d / "state.bin").write_bytes(bytes([step]) * 64)
    # a checkpoint killed while saving: files but no COMPLETE marker
    store.fs.makedirs(f"{area.base}/step-00000030", exist_ok=True)
    store.fs.pipe_file(f"{area.base}/step-00000030/state.bin", b"partial")
    step, local = area.latest()
    assert step == 20 and (local / "state.bin").read_bytes() == bytes([20]) * 64
    area.prune(keep=1)
    assert area.steps() == [20]
    assert not store.fs.exists(f"{area.base}/step-00000030")


def test_execution_records(store):
    store.record_event("probe", "a" * 24, "started", flow_run="r1")
    time.sleep(0.002)
    store.record_event("probe", "a" * 24, "committed", flow_run="r1")
    store.record_event("merge", "b" * 24, "committed")
    assert [e["event"] for e in store.events("probe")] == ["started", "committed"]
    assert len(store.events(event="committed")) == 2


RACING_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from linguaforge.storage import ArtifactStore
    store = ArtifactStore(sys.argv[1], cache_dir=sys.argv[2])
    go = Path(sys.argv[3])
    with store.writer("model", "race" + "0" * 20, stage="s", stage_version=1, params={}) as w:
        for i in range(30):
            (w.path / f"shard-{i}.bin").write_bytes(bytes([i]) * 50_000)
        while not go.exists():  # both writers reach the commit at the same moment
            time.sleep(0.001)
    print(w.ref.digest, w.ref.reused)
""")


@pytest.mark.parametrize("attempt", range(3))
def test_two_processes_committing_one_key_leave_one_intact_artifact(tmp_path, repo_root, attempt):
    store = _store("local", tmp_path)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACING_WRITER, store.url, str(tmp_path / f"c{i}"), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=repo_root)
             for i in range(2)]
    while len(list((Path(store.root) / ".staging").glob("*/shard-29.bin"))) < 2:
        assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs]
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    digests = {out.split()[0] for out, _ in outputs}
    assert len(digests) == 1 and sorted(out.split()[1] for out, _ in outputs) == ["False", "True"]  # one won
    assert store.audit() == {} and [m.key for m in store.list()] == ["race" + "0" * 20]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_is_a_clear_error_and_commits_nothing(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    try:
        store = ArtifactStore(str(disk / "store"), cache_dir=tmp_path / "cache")
        with pytest.raises(StoreError, match="no space left on the device while writing model/full"):
            with store.writer("model", "full" + "0" * 20, stage="s", stage_version=1, params={}) as w:
                for i in range(8):
                    (w.path / f"shard-{i}.bin").write_bytes(b"\1" * 300_000)
        assert store.list() == [] and list((disk / "store" / ".staging").iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_open_store_shares_one_store_and_takes_nested_options(tmp_path):
    """Storage options nest (client_kwargs: {endpoint_url: ...}); the per-process store cache must take them
    (a tuple of items once made them unhashable), and hand every caller the same store object."""
    from linguaforge.storage.settings import StoreConfig, open_store

    cfg = StoreConfig(url=str(tmp_path / "store"), cache_dir=str(tmp_path / "cache"),
                      storage_options={"client_kwargs": {"region_name": "x"}})
    assert open_store(cfg) is open_store(StoreConfig(**cfg.model_dump()))
    missing = StoreConfig(url=str(tmp_path / "typo"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(StoreError):
        open_store(missing, create=False)
    assert not (tmp_path / "typo").exists()
