"""The artifact store: content-addressed stage outputs over any fsspec URL (local, memory://, s3://, gs://)."""

from linguaforge.storage.checkpoints import CheckpointArea
from linguaforge.storage.refs import ArtifactRef, Manifest, artifact_key, canonical_json
from linguaforge.storage.store import (
    DEFAULT_STORE_URL,
    ArtifactReader,
    ArtifactStore,
    ArtifactWriter,
    IntegrityError,
    NotCommittedError,
    StoreError,
    code_version,
    sha256_file,
)

__all__ = [
    "DEFAULT_STORE_URL", "ArtifactReader", "ArtifactRef", "ArtifactStore", "ArtifactWriter", "CheckpointArea",
    "IntegrityError", "Manifest", "NotCommittedError", "StoreError", "artifact_key", "canonical_json",
    "code_version", "sha256_file",
]
