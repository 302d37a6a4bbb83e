"""Where a model, corpus or benchmark lives, told apart without importing torch or touching the network:
a remote URL (s3://, gs://, https://, ...), an HF hub id (`org/name`), or a local path. Local paths are
checked at once, so a typo is reported in a second, not after the model hub gave up on it."""

from __future__ import annotations

import re
from pathlib import Path

from linguaforge.pipelines.errors import InputError

REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "az://", "abfs://", "http://", "https://", "memory://")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def is_remote(uri: str) -> bool:
    return uri.startswith(REMOTE_SCHEMES)


def is_local(uri: str) -> bool:
    """A path on this machine: anything that is not a URL and does not read as a hub id, or that exists."""
    if is_remote(uri) or uri.startswith(("hf:", "demo:")):
        return False
    return uri.startswith(("/", "./", "../", "~")) or Path(uri).exists() or not _HUB_ID.fullmatch(uri)


def check_model_location(uri: str, what: str = "model") -> None:
    """A local model folder must exist and hold an HF `save_pretrained` layout (config.json)."""
    if not isinstance(uri, str) or not uri.strip():
        raise InputError(f"{what}: empty location")
    if not is_local(uri):
        return
    path = Path(uri).expanduser()
    if not path.exists():
        raise InputError(f"{what} {uri}: no such folder (nor is it a hub id of the form org/name)")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise InputError(f"{what} {uri}: not a model folder (no config.json; expected what save_pretrained writes)")


def check_local_file_or_folder(uri: str, what: str) -> None:
    if is_local(uri) and not Path(uri).expanduser().exists():
        raise InputError(f"{what} {uri}: no such file or folder")
