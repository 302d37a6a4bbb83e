"""Artifact identity: references passed between stages, manifests, and content-addressed keys.

A stage's output is addressed by `key = H(stage, stage version, params, input digests)`, so the same
inputs give the same key on any machine, and a changed parameter or input gives a new one.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, field_serializer, field_validator

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "linguaforge.manifest/1"
KEY_LENGTH = 24  # hex chars of sha256: 96 bits, collision-free for any realistic store


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the byte form every hash in the store is taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_jsonable)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if hasattr(obj, "__fspath__"):
        return str(obj)
    raise TypeError(f"cannot hash a parameter of type {type(obj).__name__}: {obj!r}")


def artifact_key(stage: str, version: str | int, params: dict[str, Any], inputs: dict[str, ArtifactRef]) -> str:
    """The content address of a stage output. Input refs enter by digest only, never by URI,
    so moving a store (local folder to S3) keeps every key."""
    payload = {
        "stage": stage,
        "version": str(version),
        "params": params,
        "inputs": {name: ref.digest for name, ref in sorted(inputs.items())},
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:KEY_LENGTH]


class ArtifactRef(BaseModel):
    """What tasks pass to each other: a pointer to a committed artifact, never its content."""

    kind: str
    key: str
    uri: str
    digest: str
    reused: bool = Field(False, description="True when the stage was skipped because the artifact was already committed")

    @field_serializer("reused", when_used="json")
    def _reused_once_serialised(self, value: bool) -> bool:
        # A ref read back from JSON (Prefect's result cache, a message) was made by an earlier execution:
        # whoever loads it did not produce it. This also keeps cache keys independent of the flag.
        return True

    def __str__(self) -> str:
        return f"{self.kind}/{self.key}"


class FileEntry(BaseModel):
    size: int
    sha256: str


class InputEntry(BaseModel):
    kind: str
    key: str
    digest: str


def check_relative_path(rel: str) -> str:
    """A file of an artifact is named by a plain relative POSIX path: nothing that could address a file outside
    its artifact folder (absolute, `..`, empty or `.` segments, backslashes, NUL)."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or "\\" in rel or "\0" in rel or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"file name {rel[:120]!r} is not a plain relative path inside the artifact")
    return rel


class Manifest(BaseModel):
    """The commit marker of an artifact, written last. Holds no credentials, ever."""

    format: str = MANIFEST_FORMAT
    kind: str
    key: str
    stage: str
    stage_version: str
    params: dict[str, Any]
    inputs: dict[str, InputEntry]
    code_version: str
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="microseconds"))
    files: dict[str, FileEntry]
    metrics: dict[str, Any] = Field(default_factory=dict)

    @field_validator("files")
    @classmethod
    def _files_inside(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for rel in files:
            check_relative_path(rel)
        return files

    @property
    def digest(self) -> str:
        """Content digest: the kind, key and every file's hash. Timestamps do not enter it."""
        body = {"kind": self.kind, "key": self.key, "files": {p: f.sha256 for p, f in sorted(self.files.items())}}
        return hashlib.sha256(canonical_json(body).encode()).hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files.values())
