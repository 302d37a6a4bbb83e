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


def url_to_fs(uri: str, what: str, storage_options: dict | None = None):
    """fsspec's (filesystem, path) for `uri`, where an unknown URL scheme, or one whose library is not installed,
    is an InputError naming the input (fsspec says "Protocol not known", or raises an ImportError)."""
    import fsspec

    check_scheme(uri, what)
    try:
        return fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
    except ImportError as exc:
        raise InputError(f"{what} {uri}: reading {uri.split('://')[0]}:// needs a library that is not installed "
                         f"({exc})") from None
    except (ValueError, TypeError) as exc:
        raise InputError(f"{what} {uri}: cannot be opened ({exc})") from None


def check_scheme(uri: str, what: str) -> None:
    """A `scheme://` location must use a scheme linguaforge reads (a plain path has none)."""
    scheme, sep, _ = uri.partition("://")
    if sep and not uri.startswith((*REMOTE_SCHEMES, "file://")):
        known = ", ".join(s.removesuffix("://") for s in REMOTE_SCHEMES)
        raise InputError(f"{what} {uri}: unsupported URL scheme {scheme + '://'!r} (supported: {known}, file, or "
                         "a local path)")


def is_local(uri: str) -> bool:
    """A path on this machine: anything that is not a URL and does not read as a hub id, or that exists."""
    if is_remote(uri) or uri.startswith(("hf:", "demo:")):
        return False
    return uri.startswith(("/", "./", "../", "~")) or Path(uri).exists() or not _HUB_ID.fullmatch(uri)


def check_model_location(uri: str, what: str = "model") -> None:
    """A local model folder must exist and hold an HF `save_pretrained` layout (config.json)."""
    if not isinstance(uri, str) or not uri.strip():
        raise InputError(f"{what}: empty location")
    check_scheme(uri, what)
    if not is_local(uri):
        return
    path = Path(uri).expanduser()
    if not path.exists():
        raise InputError(f"{what} {uri}: no such folder (nor is it a hub id of the form org/name)")
    if not path.is_dir() or not any((path / name).is_file() for name in ("config.json", "adapter_config.json")):
        raise InputError(f"{what} {uri}: not a model folder (no config.json; expected what save_pretrained writes)")


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_not_pickle_only(uri: str, what: str) -> None:
    """A local model folder whose weights are pickles only is refused by name: unpickling an input can run any code
    in it, so linguaforge loads safetensors only."""
    path = Path(uri).expanduser()
    if not is_local(uri) or not path.is_dir() or any(path.glob("*.safetensors")):
        return
    if pickled := sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES):
        raise InputError(f"{what} {uri}: its weights are pickle files only ({', '.join(pickled[:3])}); linguaforge "
                         "never unpickles an input (that can run code): save it as safetensors "
                         "(save_pretrained(..., safe_serialization=True))")


def check_local_file_or_folder(uri: str, what: str) -> None:
    check_scheme(uri, what)
    if is_local(uri) and not Path(uri).expanduser().exists():
        raise InputError(f"{what} {uri}: no such file or folder")


def resolve_model_dir(uri: str, cache_dir: str | Path = "./.linguaforge/cache", storage_options: dict | None = None) -> str:
    """A local folder for a model stored at a remote URL (copied once into the cache); other URIs pass through
    unchanged (a local folder, or an HF hub id that transformers resolves itself)."""
    if not is_remote(uri):
        return uri
    fs, root = url_to_fs(uri, "model", storage_options)
    if not fs.exists(f"{root.rstrip('/')}/config.json"):
        raise InputError(f"model {uri}: no config.json there (expected an HF save_pretrained folder)")
    local = Path(cache_dir).resolve() / "models" / root.strip("/").replace("/", "__")
    if not (local / ".complete").exists():
        local.mkdir(parents=True, exist_ok=True)
        fs.get(root.rstrip("/") + "/", str(local) + "/", recursive=True)
        (local / ".complete").write_text(uri)
    return str(local)


def resolve_file(uri: str, cache_dir: str | Path = "./.linguaforge/cache", storage_options: dict | None = None) -> Path:
    """A local path for a file that may live at a remote URL (downloaded once into the cache)."""
    if not is_remote(uri):
        if not Path(uri).is_file():
            raise InputError(f"{uri}: no such file")
        return Path(uri)
    fs, root = url_to_fs(uri, "file", storage_options)
    if not fs.exists(root):
        raise InputError(f"{uri}: no such file")
    local = Path(cache_dir).resolve() / "files" / root.strip("/").replace("/", "__")
    if not local.exists():
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_suffix(local.suffix + ".partial")
        fs.get_file(root, str(partial))
        partial.rename(local)  # whole or absent
    return local
