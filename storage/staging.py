"""Staging folders: where an artifact or a checkpoint is written before it is committed, each with its owner.

    <staging>/<prefix><random>/          the folder being written
    <staging>/<prefix><random>.owner     its owner record (host, pid, the process's start time); its mtime is the
                                         owner's heartbeat, touched every HEARTBEAT_S seconds while it writes

A sweep removes only what it can prove dead: a folder whose owner record names this host and a process that no
longer exists (or a new process that reused the pid: the start time differs), or another host's folder whose
heartbeat is older than the lease. A folder without an owner record was not made by this code and is never
removed; nothing is followed through a symbolic link, and a staging root that is a link, or lies outside the
folder it belongs to, is neither written nor swept.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from linguaforge.storage.files import StoreError

log = logging.getLogger("linguaforge.storage")

OWNER_SUFFIX = ".owner"
HEARTBEAT_S = 60.0
DEFAULT_LEASE_S = 6 * 3600.0  # far above HEARTBEAT_S: a writer on another host is presumed alive this long
HOST = socket.gethostname()


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc): with the pid, it names one process
    for good, where a pid alone is reused. None when there is no such process or no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name before ")" may hold spaces


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    started: str | None

    @classmethod
    def current(cls) -> Owner:
        return cls(HOST, os.getpid(), process_start(os.getpid()))

    def is_gone(self, heartbeat_age_s: float, lease_s: float) -> bool:
        """Proven dead: on this host, its process is gone (or the pid now names a later process); elsewhere,
        its heartbeat is older than the lease."""
        if self.host != HOST or not Path("/proc/self/stat").exists():
            return heartbeat_age_s > lease_s
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            pass
        return self.started is not None and process_start(self.pid) not in (None, self.started)


class _Heartbeat:
    """One daemon thread per process that touches the owner records of the folders this process is writing."""

    def __init__(self) -> None:
        self._records: set[Path] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, record: Path) -> None:
        with self._lock:
            self._records.add(record)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="staging-heartbeat", daemon=True)
                self._thread.start()

    def discard(self, record: Path) -> None:
        with self._lock:
            self._records.discard(record)

    def _run(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            with self._lock:
                records = list(self._records)
            for record in records:
                try:
                    os.utime(record)
                except OSError:
                    pass


HEARTBEAT = _Heartbeat()


class StagingArea:
    """The staging folder `root`, which must stay inside `home` (the store, or the local cache of a remote one)."""

    def __init__(self, root: Path, home: Path, lease_s: float = DEFAULT_LEASE_S):
        self.root, self.home, self.lease_s = Path(root), Path(home), lease_s

    def _problem(self) -> str | None:
        """Why this staging root must not be used, or None."""
        if self.root.is_symlink():
            return f"{self.root} is a symbolic link (to {os.readlink(self.root)})"
        if self.root.exists() and not self.root.is_dir():
            return f"{self.root} is not a folder"
        real_home = os.path.realpath(self.home)
        if not os.path.realpath(self.root).startswith(real_home.rstrip("/") + "/"):
            return f"{self.root} resolves outside {self.home}"
        return None

    def create(self) -> Path:
        if problem := self._problem():
            raise StoreError(f"staging folder {problem}; linguaforge writes only inside its store: remove it, and "
                             "the next run makes a plain folder there")
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root

    def new(self, prefix: str) -> Path:
        """A fresh folder with its owner record, kept alive by the heartbeat until `release`. The record is written
        first: a kill at any point leaves nothing without an owner (a record without its folder is swept too)."""
        root = self.create()
        while True:
            folder = root / f"{prefix}{uuid.uuid4().hex[:12]}"
            record = folder.with_name(folder.name + OWNER_SUFFIX)
            owner = Owner.current()
            partial = _partial_record(record, owner)
            partial.write_text(json.dumps(asdict(owner)))
            try:
                os.link(partial, record)  # appears whole, and never over another writer's record
            except FileExistsError:
                partial.unlink()
                continue
            partial.unlink()
            HEARTBEAT.add(record)
            folder.mkdir(mode=0o700)
            return folder

    def release(self, folder: Path) -> None:
        record = folder.with_name(folder.name + OWNER_SUFFIX)
        HEARTBEAT.discard(record)
        _remove_tree(folder)
        record.unlink(missing_ok=True)  # the record goes last: a kill in between leaves it provably dead

    @contextmanager
    def folder(self, prefix: str) -> Iterator[Path]:
        folder = self.new(prefix)
        try:
            yield folder
        finally:
            self.release(folder)

    def sweep(self) -> list[str]:
        """Remove the folders whose writers are proven gone; returns their names."""
        if not self.root.exists() and not self.root.is_symlink():
            return []
        if problem := self._problem():
            log.warning("not sweeping staging: %s (linguaforge deletes only inside its store)", problem)
            return []
        removed = []
        for record in self.root.glob(f"*{OWNER_SUFFIX}"):
            folder = record.with_name(record.name.removesuffix(OWNER_SUFFIX))
            owner = _read_owner(record)
            try:
                age = time.time() - record.lstat().st_mtime
            except FileNotFoundError:
                continue
            if owner is None or not owner.is_gone(age, self.lease_s):
                continue
            if folder.is_symlink():
                log.warning("staging entry %s is a symbolic link; left alone", folder)
                continue
            _remove_tree(folder)
            record.unlink(missing_ok=True)
            removed.append(folder.name)
        for partial in self.root.glob(f"*{OWNER_SUFFIX}[~.]*.partial"):  # a record killed before it was in place
            owner = _owner_in_name(partial) or _read_owner(partial)
            if owner is not None and owner.is_gone(time.time() - partial.lstat().st_mtime, self.lease_s):
                partial.unlink(missing_ok=True)
        if removed:
            log.info("removed %d staging folder(s) left by writers that are gone, in %s", len(removed), self.root)
        return removed

    def unowned(self) -> list[str]:
        """Entries of the staging folder that have no owner record (not made by this code: never removed)."""
        if self._problem() or not self.root.is_dir():
            return []
        owned = {r.name.removesuffix(OWNER_SUFFIX) for r in self.root.glob(f"*{OWNER_SUFFIX}")}
        return sorted(p.name for p in self.root.iterdir()
                      if not p.name.endswith((OWNER_SUFFIX, ".partial")) and p.name not in owned)


def _partial_record(record: Path, owner: Owner) -> Path:
    """Where an owner record is written before it is linked into place. Its name holds the owner too: a kill
    before the text is in it leaves a file whose writer can still be proven gone (and swept)."""
    return record.with_name(f"{record.name}~{owner.pid}~{owner.started or ''}~{owner.host}~{uuid.uuid4().hex[:8]}"
                            ".partial")


def _owner_in_name(partial: Path) -> Owner | None:
    parts = partial.name.removesuffix(".partial").rsplit("~", 4)
    if len(parts) != 5 or not parts[1].isdigit():
        return None
    return Owner(parts[3], int(parts[1]), parts[2] or None)


def _read_owner(record: Path) -> Owner | None:
    try:
        data = json.loads(record.read_text())
        return Owner(str(data["host"]), int(data["pid"]), data.get("started"))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: not provably ours, so never a reason to delete


def _remove_tree(folder: Path) -> None:
    """rmtree that never follows a link: a link in the tree is removed as a link, its target untouched."""
    if folder.is_symlink():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
