"""What the store and its checkpoint areas share below both: the errors, file hashing and listing.

It sits under store.py and checkpoints.py so that neither has to import the other's internals.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_HASH_CHUNK = 8 << 20
CHECKPOINTS_DIR = "checkpoints"  # <root>/<kind>/<key>/checkpoints/: a running stage's resumable state


class StoreError(RuntimeError):
    """The store cannot be reached or used (bad URL, missing credentials, missing bucket)."""


class IntegrityError(StoreError):
    """A stored file does not match its manifest (missing, truncated, or altered)."""


class NotCommittedError(StoreError):
    """An artifact was asked for that has no manifest."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def relative_files(folder: Path) -> list[str]:
    """Every file under `folder`, as sorted POSIX paths relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
