"""Resumable state of a long stage, kept under its (not yet committed) artifact's folder.

    <root>/<kind>/<key>/checkpoints/step-00000120/...        the checkpoint's files
    <root>/<kind>/<key>/checkpoints/step-00000120/COMPLETE   written last: file list with sizes and sha256

A checkpoint without COMPLETE (the process was killed while saving it), or whose files do not match
its COMPLETE record, is skipped in favour of the previous complete one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from fsspec import AbstractFileSystem

from linguaforge.storage.files import CHECKPOINTS_DIR, IntegrityError, relative_files, sha256_file
from linguaforge.storage.refs import FileEntry


class CheckpointHost(Protocol):
    """What a checkpoint area needs of its store (ArtifactStore provides it): the area depends on this
    public surface, not on the store module, so the two do not import each other."""

    fs: AbstractFileSystem
    is_local: bool
    cache_dir: Path

    def path(self, *parts: str) -> str: ...

    def staging_folder(self, prefix: str) -> AbstractContextManager[Path]: ...

    def remove(self, path: str, what: str) -> None: ...

    def verify_file(self, path: Path, entry: FileEntry, label: str) -> None: ...

log = logging.getLogger("linguaforge.storage")
COMPLETE = "COMPLETE"


def _step_name(step: int) -> str:
    return f"step-{step:08d}"


class CheckpointArea:
    def __init__(self, store: CheckpointHost, kind: str, key: str):
        self.store = store
        self.kind, self.key = kind, key
        self.base = store.path(kind, key, CHECKPOINTS_DIR)

    @contextmanager
    def new(self, step: int) -> Iterator[Path]:
        """A local folder to write checkpoint `step` into; saved (COMPLETE last) when the block exits cleanly."""
        with self.store.staging_folder(f"ckpt-{step}-") as tmp:
            yield tmp
            self._save(step, tmp)

    def _save(self, step: int, local: Path) -> None:
        files = {rel: FileEntry(size=(local / rel).stat().st_size, sha256=sha256_file(local / rel)).model_dump()
                 for rel in relative_files(local)}
        target = f"{self.base}/{_step_name(step)}"
        fs = self.store.fs
        self.store.remove(target, f"an earlier checkpoint {_step_name(step)} of {self.kind}/{self.key}")
        if self.store.is_local:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            os.replace(local, target)  # same filesystem: a rename, not a copy
        else:
            for rel in files:
                fs.put_file(str(local / rel), f"{target}/{rel}")
        fs.pipe_file(f"{target}/{COMPLETE}", json.dumps({"step": step, "files": files}).encode())

    def steps(self) -> list[int]:
        """Steps that have a COMPLETE marker, newest first."""
        found = []
        self.store.fs.invalidate_cache()  # a checkpoint may have been written by another process
        for path in self.store.fs.glob(f"{self.base}/step-*/{COMPLETE}"):
            found.append(int(path.rstrip("/").split("/")[-2].removeprefix("step-")))
        return sorted(found, reverse=True)

    def latest(self) -> tuple[int, Path] | None:
        """The newest complete, intact checkpoint as a local folder, or None."""
        fs = self.store.fs
        for path in fs.glob(f"{self.base}/step-*"):
            name = path.rstrip("/").split("/")[-1]
            if not fs.exists(f"{path}/{COMPLETE}"):
                log.warning("skipping incomplete checkpoint %s of %s/%s (no %s marker)", name, self.kind, self.key,
                            COMPLETE)
        for step in self.steps():
            try:
                return step, self._fetch(step)
            except IntegrityError as exc:
                log.warning("skipping damaged checkpoint step %d of %s/%s: %s", step, self.kind, self.key, exc)
        return None

    def _fetch(self, step: int) -> Path:
        remote = f"{self.base}/{_step_name(step)}"
        record = json.loads(self.store.fs.cat_file(f"{remote}/{COMPLETE}"))
        if self.store.is_local:
            local = Path(remote)
        else:
            local = self.store.cache_dir / "checkpoints" / self.kind / self.key / _step_name(step)
        for rel, raw in record["files"].items():
            entry = FileEntry.model_validate(raw)
            if not self.store.is_local:
                (local / rel).parent.mkdir(parents=True, exist_ok=True)
                if not (local / rel).exists() or (local / rel).stat().st_size != entry.size:
                    self.store.fs.get_file(f"{remote}/{rel}", str(local / rel))
            self.store.verify_file(local / rel, entry, f"checkpoint {self.kind}/{self.key}/{_step_name(step)}/{rel}")
        return local

    def prune(self, keep: int) -> None:
        """Keep the newest `keep` complete checkpoints; remove older ones and incomplete leftovers."""
        complete = self.steps()
        keep_names = {_step_name(s) for s in complete[:keep]}
        for path in self.store.fs.glob(f"{self.base}/step-*"):
            if path.rstrip("/").split("/")[-1] not in keep_names:
                self.store.remove(path.rstrip("/"), f"an old checkpoint of {self.kind}/{self.key}")

    def clear(self) -> None:
        self.store.remove(self.base, f"the checkpoints of {self.kind}/{self.key}")
