"""The artifact store: stage outputs as folders under any fsspec URL, committed by a manifest written last.

    <root>/<kind>/<key>/manifest.json     the commit marker (files, sizes, sha256, params, inputs, metrics)
    <root>/<kind>/<key>/...               the artifact's files
    <root>/<kind>/<key>/checkpoints/      resumable state of a stage still running (see CheckpointArea)
    <root>/_events/...                    one small JSON per stage execution (started / committed / failed)

Reads verify every file against the manifest: a flipped byte or a truncated file is an IntegrityError,
never silently used. Remote files are read through a local content-verified cache.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from linguaforge.storage.files import (  # noqa: F401 - the errors and sha256_file are re-exported here
    CHECKPOINTS_DIR,
    IntegrityError,
    NotCommittedError,
    StoreError,
    relative_files,
    sha256_file,
)
from linguaforge.storage.refs import (
    MANIFEST_NAME,
    ArtifactRef,
    FileEntry,
    InputEntry,
    Manifest,
    artifact_key,
)
from linguaforge.storage.staging import DEFAULT_LEASE_S, StagingArea

if TYPE_CHECKING:
    from linguaforge.storage.checkpoints import CheckpointArea

log = logging.getLogger("linguaforge.storage")

DEFAULT_STORE_URL = "./.linguaforge/store"
DEFAULT_CACHE_DIR = "./.linguaforge/cache"
EVENTS_DIR = "_events"
STAGING_DIR = ".staging"
_CREDENTIAL_OPTIONS = {"key", "secret", "token", "password", "passwd", "aws_access_key_id", "aws_secret_access_key",
                       "aws_session_token", "access_key", "secret_key", "session_token", "access_token",
                       "refresh_token", "client_secret", "account_key", "sas_token", "credential", "credentials",
                       "connection_string", "api_key", "private_key"}
# errors of an object store that has gone away for a while (connection refused or reset, timeouts): worth
# another attempt; anything else (no credentials, access denied, no bucket) is not
_TRANSIENT_NAMES = {"EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
                    "ClientConnectorError", "ServerDisconnectedError", "ClientOSError", "ClientPayloadError",
                    "FSTimeoutError", "IncompleteReadError", "ResponseStreamingError"}


_WRITE_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                 errno.EROFS: "the store's filesystem became read-only", errno.EACCES: "permission denied"}


def os_errno(exc: BaseException) -> int | None:
    """The OS error code behind an exception: an OSError's own, or one that a library (safetensors, pyarrow) wrapped
    in its own exception type and message ("I/O error: No space left on device (os error 28)")."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc.errno
        if found := re.search(r"\(os error (\d+)\)|\[Errno (\d+)\]", str(exc)):
            return int(found.group(1) or found.group(2))
        exc = exc.__cause__ or exc.__context__
    return None


def credential_paths(options: Any, where: str = "") -> list[str]:
    """The dotted paths of every credential in (nested) storage options, e.g. client_kwargs.aws_secret_access_key:
    they must come from the environment, never from a configuration that reaches logs, manifests and Prefect."""
    found = []
    if isinstance(options, dict):
        for name, value in options.items():
            path = f"{where}.{name}" if where else str(name)
            if str(name).lower().replace("-", "_") in _CREDENTIAL_OPTIONS and value not in (None, "", False):
                found.append(path)
            found += credential_paths(value, path)
    elif isinstance(options, list | tuple):
        for i, value in enumerate(options):
            found += credential_paths(value, f"{where}[{i}]")
    return found


def _transient(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, ConnectionError | TimeoutError) or type(exc).__name__ in _TRANSIENT_NAMES:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@cache
def code_version() -> str:
    """Package version plus the git commit when run from a checkout (recorded in every manifest)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("linguaforge")
    except PackageNotFoundError:
        pkg = "0+unknown"
    if env := os.environ.get("LINGUAFORGE_CODE_VERSION"):
        return f"{pkg}+{env}"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return f"{pkg}+g{sha}"
    except (OSError, subprocess.SubprocessError):
        return pkg


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
STORE_MARKER = "linguaforge-store.json"  # a store knows it is one: only a folder holding this is ever deleted in
STORE_FORMAT = "linguaforge.store/1"
# never a store: the filesystem's own folders (and everything under the first group)
_SYSTEM_TREES = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/dev", "/proc",
                 "/sys", "/run", "/snap")
_SYSTEM_FOLDERS = {"/", "/var", "/var/lib", "/var/tmp", "/home", "/root", "/opt", "/srv", "/mnt", "/media", "/tmp"}


def system_folder(path: str) -> bool:
    """True for the filesystem root, a system folder or anything inside /etc, /usr, ... and the home folder."""
    real = os.path.realpath(os.path.expanduser(path))
    if real in _SYSTEM_FOLDERS or real == os.path.realpath(os.path.expanduser("~")):
        return True
    return any(real == tree or real.startswith(tree + "/") for tree in _SYSTEM_TREES)


class ArtifactStore:
    """Content-addressed, commit-by-manifest artifact store over an fsspec URL."""

    def __init__(
        self,
        url: str = DEFAULT_STORE_URL,
        cache_dir: str | Path | None = None,
        storage_options: dict[str, Any] | None = None,
        multipart_chunksize: int | None = None,
        create: bool = True,
        upload_attempts: int = 4,
        upload_backoff_s: float = 2.0,
        staging_lease_s: float = DEFAULT_LEASE_S,
    ):
        """`create=False`: the store must exist already (commands that only read one must not make one at a
        mistyped path), and opening it changes nothing. `create=True` (a run) makes the store with its marker
        file, or accepts a folder that holds the marker, and sweeps staging folders whose writers are gone (another
        host's after `staging_lease_s` without a heartbeat). A remote commit whose endpoint goes away is tried
        `upload_attempts` times (the client's own retries inside each), `upload_backoff_s` doubling between them."""
        if not isinstance(url, str) or not url.strip():
            raise StoreError(f"store URL {url!r} is empty")
        options = dict(storage_options or {})
        self.storage_options = dict(options)  # as given (never credentials: refused below), for handles
        if leaked := credential_paths(options):
            raise StoreError(
                f"store {url!r}: credentials ({', '.join(leaked)}) must not be given in storage_options, "
                "which end up in configs and logs; set them in the environment (AWS_ACCESS_KEY_ID, ...) instead"
            )
        if endpoint := options.pop("endpoint_url", None):
            options.setdefault("client_kwargs", {})["endpoint_url"] = endpoint
        # A fresh filesystem object per store: fsspec's instance cache would otherwise hand back a
        # client built with whatever credentials the environment had when it was first made.
        options.setdefault("skip_instance_cache", True)
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **options)
        except (ImportError, ValueError, TypeError) as exc:
            raise StoreError(f"store URL {url!r} cannot be opened: {exc}") from None
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.root = root.rstrip("/")
        self.url = self.root if self.is_local else self.fs.unstrip_protocol(self.root)
        self.cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR).resolve()
        self.multipart_chunksize = multipart_chunksize
        self.upload_attempts, self.upload_backoff_s = max(1, upload_attempts), upload_backoff_s
        self._verified: dict[tuple[str, int, int], str] = {}
        self._marked = False
        self._staging = StagingArea(self._staging_dir, Path(self.root) if self.is_local else self.cache_dir,
                                    staging_lease_s)
        self._check_access(create)
        if create:
            self.ensure_marker()
            self.sweep_staging()

    # -- handles for other processes -----------------------------------------------------------
    def handle(self) -> str:
        """Everything another process (a training worker, a GPU job) needs to open this same store: URL,
        storage options (which never hold credentials) and cache dir, as one JSON string."""
        return json.dumps({"url": self.url, "storage_options": self.storage_options,
                           "cache_dir": str(self.cache_dir), "staging_lease_s": self._staging.lease_s}, sort_keys=True)

    @classmethod
    def from_handle(cls, handle: str) -> ArtifactStore:
        """A store from `handle()`'s JSON, or from a bare URL (default options and cache)."""
        if not handle.lstrip().startswith("{"):
            return cls(handle)
        spec = json.loads(handle)
        return cls(spec["url"], cache_dir=spec["cache_dir"], storage_options=spec["storage_options"],
                   staging_lease_s=spec.get("staging_lease_s", DEFAULT_LEASE_S))

    # -- addressing ---------------------------------------------------------------------------
    key = staticmethod(artifact_key)

    def path(self, *parts: str) -> str:
        """The store path of `<root>/<parts...>` (no protocol)."""
        return "/".join([self.root, *parts])

    @staticmethod
    def _check_address(kind: str, key: str) -> None:
        """Kinds and keys are single path segments: nothing may address a path outside the store's root."""
        for what, value in (("kind", kind), ("key", key)):
            if not isinstance(value, str) or not _NAME.fullmatch(value) or value in {".", ".."}:
                raise StoreError(f"artifact {what} {str(value)[:80]!r} is not a plain name (letters, digits, . _ -)")

    def uri(self, kind: str, key: str) -> str:
        path = self.path(kind, key)
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def _check_access(self, create: bool = True) -> None:
        if self.is_local:
            root = Path(self.root)
            if system_folder(self.root or "/"):
                raise StoreError(f"store {self.url} is a system folder (or the filesystem root, or your home folder "
                                 "itself); point store.url at a folder of its own, e.g. ./.linguaforge/store")
            if not create and not root.is_dir():
                raise StoreError(f"store {self.url} does not exist (a typo? `linguaforge run` creates a store)")
            try:
                root.mkdir(parents=True, exist_ok=True)
                probe = tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-", delete=True)
                probe.close()
            except OSError as exc:
                if create:
                    raise StoreError(f"store {self.url} is not writable: {exc.strerror or exc}") from None
            return
        try:
            self.fs.ls(self.root.split("/")[0], refresh=True)
            if not create and not self.fs.exists(self.root):
                raise StoreError(f"store {self.url} does not exist (a typo? `linguaforge run` creates a store)")
        except StoreError:
            raise
        except FileNotFoundError as exc:
            raise StoreError(f"store {self.url}: bucket or folder {self.root.split('/')[0]!r} does not exist") from exc
        except Exception as exc:  # botocore raises its own hierarchy; any failure here means "unusable"
            hint = ""
            if "credential" in str(exc).lower() or type(exc).__name__ in {"NoCredentialsError", "PermissionError"}:
                hint = (" — no usable credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                        "(and AWS_ENDPOINT_URL for MinIO) in the environment")
            raise StoreError(f"store {self.url} is not accessible: {type(exc).__name__}: {exc}{hint}") from exc

    # -- the marker: a store knows it is one ------------------------------------------------------
    def is_marked(self) -> bool:
        if not self._marked:  # a marker, once seen, stays: asked before every deletion, checked once
            self.fs.invalidate_cache()
            self._marked = self.fs.exists(self.path(STORE_MARKER))
        return self._marked

    def ensure_marker(self) -> None:
        """Make the marker in a new or empty folder, or in a store made before markers (every entry is a store's:
        artifact folders with valid manifests, execution records, staging); refuse any other folder."""
        if self.is_marked():
            return
        entries = self._top_level()
        if entries and (stranger := self._not_a_store_entry(entries)):
            raise StoreError(
                f"store {self.url}: the folder holds files that are not a linguaforge store's ({stranger}) and no "
                f"{STORE_MARKER}; linguaforge writes only into a new or empty folder, or a store it made: point "
                "store.url at another folder")
        record = {"format": STORE_FORMAT, "created_at": datetime.now(UTC).isoformat(), "store_id": uuid.uuid4().hex,
                  "adopted": bool(entries), "code_version": code_version()}
        self.fs.pipe_file(self.path(STORE_MARKER), json.dumps(record, indent=1).encode())
        if entries:
            log.info("marked %s as a linguaforge store (it was made before stores carried %s)", self.url,
                     STORE_MARKER)

    def require_marker(self, action: str) -> None:
        """Every command that deletes asks first: a folder without the marker was not made by linguaforge."""
        if not self.is_marked():
            raise StoreError(f"{self.url} is not a linguaforge store (it has no {STORE_MARKER}); refusing to "
                             f"{action}. linguaforge deletes only inside stores it made (a store made before "
                             "markers gets one from its next `linguaforge run`)")

    def _top_level(self) -> list[str]:
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
        except FileNotFoundError:
            return []
        return [n for n in names if not n.startswith(".write-test-")]

    def _not_a_store_entry(self, entries: list[str]) -> str | None:
        """The first entry that a store made before markers would not hold, described; None when all fit."""
        for name in entries:
            path = self.path(name)
            if self.is_local and os.path.islink(path):
                return f"{name!r} is a symbolic link"
            if name in (EVENTS_DIR, STAGING_DIR) and self.fs.isdir(path):
                continue
            if not _NAME.fullmatch(name) or not self.fs.isdir(path):
                return f"{name!r}"
            for child in self.fs.ls(path, detail=False):
                key = child.rstrip("/").rsplit("/", 1)[-1]
                if key.startswith(".") and key.endswith(".lock"):
                    continue
                try:
                    manifest = Manifest.model_validate_json(self.fs.cat_file(f"{path}/{key}/{MANIFEST_NAME}"))
                except (OSError, ValueError):
                    return f"{name}/{key} has no valid {MANIFEST_NAME}"
                if (manifest.kind, manifest.key) != (name, key):
                    return f"{name}/{key}'s manifest names {manifest.kind}/{manifest.key}"
        return None

    def _deletable(self, path: str, what: str) -> None:
        """`path` may be deleted: the store is marked, the path lies inside it, and (locally) no folder on the way
        is a symbolic link (a link is never followed for deletion)."""
        self.require_marker(f"delete {what}")
        relative = path[len(self.root):].strip("/") if path.startswith(self.root + "/") else None
        if not relative or any(part in ("", ".", "..") for part in relative.split("/")):
            raise StoreError(f"refusing to delete {path}: it is not inside the store {self.url}")
        if self.is_local:
            parts = relative.split("/")
            for depth in range(1, len(parts) + 1):
                step = os.path.join(self.root, *parts[:depth])
                if os.path.islink(step):
                    raise StoreError(f"refusing to delete {what}: {step} is a symbolic link (linguaforge never "
                                     "deletes through a link; remove the link yourself if it should go)")

    def remove(self, path: str, what: str) -> None:
        """Delete a file or folder inside the store (checked by `_deletable`); a missing one is fine."""
        self._deletable(path, what)
        if self.is_local:
            target = Path(path)
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        elif self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    # -- reading ------------------------------------------------------------------------------
    def exists(self, kind: str, key: str) -> bool:
        """True only for a committed artifact (its manifest exists)."""
        self._check_address(kind, key)
        self.fs.invalidate_cache()
        return self.fs.exists(self.path(kind, key, MANIFEST_NAME))

    def manifest(self, kind: str, key: str) -> Manifest:
        self._check_address(kind, key)
        path = self.path(kind, key, MANIFEST_NAME)
        try:
            raw = self.fs.cat_file(path)
        except FileNotFoundError as exc:
            raise NotCommittedError(f"artifact {kind}/{key} is not committed in {self.url}") from exc
        try:
            return Manifest.model_validate_json(raw)
        except ValueError as exc:
            raise IntegrityError(f"manifest of {kind}/{key} in {self.url} is not valid: {exc}") from exc

    def ref(self, kind: str, key: str, reused: bool = False) -> ArtifactRef:
        manifest = self.manifest(kind, key)
        return ArtifactRef(kind=kind, key=key, uri=self.uri(kind, key), digest=manifest.digest, reused=reused)

    def open(self, ref: ArtifactRef | tuple[str, str]) -> ArtifactReader:
        kind, key = (ref.kind, ref.key) if isinstance(ref, ArtifactRef) else ref
        manifest = self.manifest(kind, key)
        if isinstance(ref, ArtifactRef) and ref.digest != manifest.digest:
            raise IntegrityError(
                f"artifact {kind}/{key}: the reference's digest {ref.digest[:12]} does not match the stored "
                f"manifest's {manifest.digest[:12]} (the artifact was replaced after the reference was made)"
            )
        return ArtifactReader(self, manifest)

    def damage(self, ref: ArtifactRef) -> str | None:
        """Why a reference can no longer be trusted, or None when the store still holds it as committed.

        Cheap enough to run on every cache hit: the manifest (present, same digest), each file's presence
        and size, and — on a local store — a full hash of any file modified after its manifest was written
        (a flipped byte changes the mtime). Reads verify every byte anyway."""
        try:
            manifest = self.manifest(ref.kind, ref.key)
        except StoreError as exc:
            return str(exc)
        if manifest.digest != ref.digest:
            return f"artifact {ref}: the store holds a different version (digest {manifest.digest[:12]})"
        base = self.path(ref.kind, ref.key)
        committed_at = self.fs.info(f"{base}/{MANIFEST_NAME}").get("mtime")
        for rel, entry in manifest.files.items():
            try:
                info = self.fs.info(f"{base}/{rel}")
            except FileNotFoundError:
                return f"artifact {ref}: file {rel!r} is missing"
            if info.get("size") != entry.size:
                return f"artifact {ref}: file {rel!r} is {info.get('size')} bytes, the manifest says {entry.size}"
            if self.is_local and committed_at is not None and info.get("mtime", 0) > committed_at:
                try:
                    self.verify_file(Path(f"{base}/{rel}"), entry, f"artifact {ref}: file {rel!r}")
                except IntegrityError as exc:
                    return str(exc)
        return None

    def audit(self) -> dict[str, str]:
        """Every committed artifact whose files no longer match its manifest (each byte re-hashed), and every
        manifest that cannot be read: {"kind/key": problem}."""
        damaged = {}
        self._verified.clear()  # re-hash every byte, whatever this process verified before
        for path in self._manifest_paths():
            kind, key = path.rstrip("/").split("/")[-3:-1]
            try:
                manifest = self.manifest(kind, key)
                if link := self._link_in(kind, key, manifest):
                    raise IntegrityError(f"{link} is a symbolic link (a store holds plain files; links are never "
                                         "followed for deletion)")
                for rel, entry in manifest.files.items():
                    self._verify_stored(kind, key, rel, entry)
            except StoreError as exc:
                damaged[f"{kind}/{key}"] = str(exc)
        for link in self._linked_folders():
            damaged.setdefault(link, f"{link} is a symbolic link (a store holds plain folders; links are never "
                                     "followed, listed or deleted through)")
        return damaged

    def _linked_folders(self) -> list[str]:
        """Kind and artifact folders of a local store that are symbolic links ("kind" or "kind/key")."""
        if not self.is_local or not os.path.isdir(self.root):
            return []
        found = []
        for kind in os.scandir(self.root):
            if kind.is_symlink():
                found.append(kind.name)
            elif kind.is_dir() and kind.name not in (EVENTS_DIR, STAGING_DIR):
                found += [f"{kind.name}/{key.name}" for key in os.scandir(kind.path) if key.is_symlink()]
        return found

    def _link_in(self, kind: str, key: str, manifest: Manifest) -> str | None:
        """The first symbolic link on the way to any of the artifact's files (local stores), or None."""
        if not self.is_local:
            return None
        seen = set()
        for rel in [MANIFEST_NAME, *manifest.files]:
            parts = [kind, key, *rel.split("/")]
            for depth in range(1, len(parts) + 1):
                step = os.path.join(self.root, *parts[:depth])
                if step not in seen and os.path.islink(step):
                    return "/".join(parts[:depth])
                seen.add(step)
        return None

    def _verify_stored(self, kind: str, key: str, rel: str, entry: FileEntry) -> None:
        if self.is_local:
            self.verify_file(Path(self.path(kind, key, rel)), entry, f"{kind}/{key}/{rel}")
            return
        cached = self.cache_dir / "artifacts" / kind / key / rel
        cached.unlink(missing_ok=True)  # hash what the store holds, not a local copy
        self.verified_local_file(kind, key, rel, entry)

    def _manifest_paths(self, kind: str | None = None) -> list[str]:
        self.fs.invalidate_cache()  # other processes and machines commit too: never trust a cached listing
        return [path for path in self.fs.glob(self.path(kind or "*", "*", MANIFEST_NAME))
                if f"/{EVENTS_DIR}/" not in path and f"/{STAGING_DIR}/" not in path]

    def list(self, kind: str | None = None) -> list[Manifest]:
        """Every committed artifact whose manifest can be read (`unreadable` names the others)."""
        return sorted(self._read_manifests(kind)[0], key=lambda m: m.created_at)

    def unreadable(self, kind: str | None = None) -> dict[str, str]:
        """{"kind/key": why} for every manifest that cannot be read (truncated, not JSON, wrong fields)."""
        return self._read_manifests(kind)[1]

    def _read_manifests(self, kind: str | None) -> tuple[list[Manifest], dict[str, str]]:
        manifests, bad = [], {}
        for path in self._manifest_paths(kind):
            kind_, key = path.rstrip("/").split("/")[-3:-1]
            try:
                manifests.append(self.manifest(kind_, key))
            except StoreError as exc:
                bad[f"{kind_}/{key}"] = str(exc)
        return manifests, bad

    def verified_local_file(self, kind: str, key: str, rel: str, entry: FileEntry) -> Path:
        """A local path to one artifact file whose size and sha256 match the manifest."""
        if self.is_local:
            path = Path(self.path(kind, key, rel))
            self.verify_file(path, entry, f"{kind}/{key}/{rel}")
            return path
        cached = self.cache_dir / "artifacts" / kind / key / rel
        if cached.exists():
            try:
                self.verify_file(cached, entry, f"{kind}/{key}/{rel} (local cache)")
                return cached
            except IntegrityError:
                log.warning("cached copy of %s/%s/%s is damaged; downloading it again", kind, key, rel)
                cached.unlink()
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            try:
                self.fs.get_file(self.path(kind, key, rel), str(tmp))
            except FileNotFoundError as exc:
                raise IntegrityError(
                    f"artifact {kind}/{key}: file {rel!r} listed in the manifest is missing from {self.url}"
                ) from exc
            self.verify_file(tmp, entry, f"{kind}/{key}/{rel}")
            os.replace(tmp, cached)
            self._remember(cached, entry.sha256)
        finally:
            tmp.unlink(missing_ok=True)
        return cached

    def verify_file(self, path: Path, entry: FileEntry, label: str) -> None:
        """Raise IntegrityError unless the local file `path` has the entry's size and sha256."""
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise IntegrityError(f"{label}: listed in the manifest but missing") from exc
        if st.st_size != entry.size:
            raise IntegrityError(f"{label}: size {st.st_size} bytes, manifest says {entry.size} (truncated or altered)")
        memo = (str(path), st.st_size, st.st_mtime_ns)
        if self._verified.get(memo) == entry.sha256:
            return
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise IntegrityError(
                f"{label}: sha256 {actual[:16]}… does not match the manifest's {entry.sha256[:16]}… (altered)"
            )
        self._verified[memo] = actual

    def _remember(self, path: Path, sha: str) -> None:
        st = path.stat()
        self._verified[(str(path), st.st_size, st.st_mtime_ns)] = sha

    # -- writing ------------------------------------------------------------------------------
    @property
    def _staging_dir(self) -> Path:
        # Local stores stage on the same filesystem so that commit is a rename, not a copy.
        return Path(self.root) / STAGING_DIR if self.is_local else self.cache_dir / STAGING_DIR

    def staging_root(self) -> Path:
        """The local folder new artifacts and checkpoints are staged in (created on first use)."""
        return self._staging.create()

    def staging_folder(self, prefix: str):
        """A context manager: a fresh staging folder with its owner record, removed on exit."""
        return self._staging.folder(prefix)

    def sweep_staging(self) -> list[str]:
        """Remove staging folders whose writers are proven gone (storage/staging.py); returns their names."""
        if self.is_local and not self.is_marked():
            return []
        return self._staging.sweep()

    def staging_leftovers(self) -> list[str]:
        """Staging entries without an owner record: not made by this code, so never swept (verify lists them)."""
        return self._staging.unowned()

    @contextmanager
    def writer(
        self,
        kind: str,
        key: str,
        *,
        stage: str,
        stage_version: str | int,
        params: dict[str, Any],
        inputs: dict[str, ArtifactRef] | None = None,
    ) -> Iterator[ArtifactWriter]:
        """Stage files in a local folder; on a clean exit, upload them and write the manifest last.

        An exception inside the block (or a kill) commits nothing: without a manifest the artifact
        does not exist, whatever files may have reached the store.
        """
        self._check_address(kind, key)
        staging = self._staging.new(prefix=f"{kind}-{key}-")
        writer = ArtifactWriter(staging, self.checkpoints(kind, key))
        try:
            yield writer
            writer.ref = self._commit(kind, key, staging, stage, str(stage_version), params, inputs or {},
                                      writer.metrics)
            writer.checkpoints.clear()  # resumable state is worthless once the result is committed
        except Exception as exc:  # noqa: BLE001 - only the machine's refusals are translated; the rest re-raised
            if (code := os_errno(exc)) not in _WRITE_ERRORS:
                raise
            where = getattr(exc, "filename", None) or staging.parent
            raise StoreError(f"{_WRITE_ERRORS[code]} while writing {kind}/{key} ({where}); nothing was committed: "
                             "fix that, or point store.url / cache_dir elsewhere, and run again") from None
        finally:
            self._staging.release(staging)

    def _commit(self, kind, key, staging: Path, stage, stage_version, params, inputs, metrics) -> ArtifactRef:
        files = {rel: FileEntry(size=(staging / rel).stat().st_size, sha256=sha256_file(staging / rel))
                 for rel in relative_files(staging)}
        if MANIFEST_NAME in files:
            raise StoreError(f"stage {stage} wrote a file named {MANIFEST_NAME}, which is reserved for the commit marker")
        manifest = Manifest(
            kind=kind, key=key, stage=stage, stage_version=stage_version, params=params,
            inputs={n: InputEntry(kind=r.kind, key=r.key, digest=r.digest) for n, r in inputs.items()},
            code_version=code_version(), files=files, metrics=metrics,
        )
        final = self.path(kind, key)
        if self.is_local:
            with self._commit_lock(kind, key):
                if self.exists(kind, key):  # another process committed this key meanwhile: the first commit wins
                    log.info("%s/%s was committed by another process meanwhile; keeping that one", kind, key)
                    return self.ref(kind, key, reused=True)
                self._move_into_place(staging, Path(final), files)
                self._write_manifest(final, manifest)
        else:
            kwargs = {"chunksize": self.multipart_chunksize} if self.multipart_chunksize else {}
            for rel in files:
                self._upload(kind, key, rel, lambda rel=rel: self.fs.put_file(str(staging / rel), f"{final}/{rel}",
                                                                              **kwargs))
            self._upload(kind, key, MANIFEST_NAME, lambda: self._write_manifest(final, manifest))
        log.info("committed %s/%s (%d files, %d bytes)", kind, key, len(files), manifest.total_bytes)
        return ArtifactRef(kind=kind, key=key, uri=self.uri(kind, key), digest=manifest.digest)

    def _upload(self, kind: str, key: str, rel: str, action) -> None:
        """One upload of a commit, tried again while the endpoint is away; a clear StoreError if it stays away
        (the manifest goes last, so nothing is committed until every file is up)."""
        began = time.monotonic()
        for attempt in range(1, self.upload_attempts + 1):
            try:
                return action()
            except Exception as exc:
                if not _transient(exc):
                    raise
                if attempt == self.upload_attempts:
                    raise StoreError(
                        f"could not upload {kind}/{key}/{rel} to {self.url}: the endpoint is unreachable "
                        f"({type(exc).__name__}: {str(exc)[:160]}) after {attempt} attempts over "
                        f"{time.monotonic() - began:.0f} s; nothing was committed, run again to resume") from None
                wait = self.upload_backoff_s * 2 ** (attempt - 1)
                log.warning("uploading %s/%s/%s: %s; trying again in %.1f s (attempt %d of %d)", kind, key, rel,
                            type(exc).__name__, wait, attempt + 1, self.upload_attempts)
                time.sleep(wait)

    @contextmanager
    def _commit_lock(self, kind: str, key: str) -> Iterator[None]:
        """One committer per key at a time on a local (or NFS-locked) store: `<kind>/.<key>.lock`."""
        lock_path = Path(self.path(kind)) / f".{key}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _move_into_place(self, staging: Path, final: Path, files: dict[str, FileEntry]) -> None:
        final.mkdir(parents=True, exist_ok=True)
        for stale in final.iterdir():  # leftovers of an earlier attempt killed before its manifest
            if stale.name != CHECKPOINTS_DIR:
                self.remove(str(stale), f"a leftover of an uncommitted {final.parent.name}/{final.name}")
        for rel, entry in files.items():
            target = final / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, target)
            self._remember(target, entry.sha256)

    def _write_manifest(self, final: str, manifest: Manifest) -> None:
        body = manifest.model_dump_json(indent=2).encode()
        if self.is_local:
            tmp = Path(final) / f".{MANIFEST_NAME}.{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, Path(final) / MANIFEST_NAME)  # atomic: the artifact appears whole or not at all
        else:
            self.fs.pipe_file(f"{final}/{MANIFEST_NAME}", body)  # one PUT: object stores publish it atomically

    def delete(self, kind: str, key: str) -> None:
        """Remove an artifact: manifest first, so that it stops existing before its files go. Cached Prefect
        results that point to it are noticed on their next hit (tasks.common.VerifiedCache). Only in a marked
        store, only inside it, never through a symbolic link."""
        self._check_address(kind, key)
        base = self.path(kind, key)
        self._deletable(base, f"artifact {kind}/{key}")
        self.remove(f"{base}/{MANIFEST_NAME}", f"the manifest of {kind}/{key}")
        self.remove(base, f"artifact {kind}/{key}")

    # -- checkpoints and execution records ----------------------------------------------------
    def checkpoints(self, kind: str, key: str) -> CheckpointArea:
        from linguaforge.storage.checkpoints import CheckpointArea

        return CheckpointArea(self, kind, key)

    def record_event(self, kind: str, key: str, event: str, **info: Any) -> None:
        """Append one execution record (who ran which stage, when, with what outcome)."""
        now = datetime.now(UTC)
        record = {"kind": kind, "key": key, "event": event, "at": now.isoformat(), "pid": os.getpid(), **info}
        name = f"{now.strftime('%Y%m%dT%H%M%S%f')}-{event}-{uuid.uuid4().hex[:8]}.json"
        path = self.path(EVENTS_DIR, kind, key, name)
        body = json.dumps(record, default=str).encode()
        if self.is_local:  # readers list the folder at any moment: a record appears whole (rename) or not at all
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            partial = Path(path).with_suffix(".partial")
            partial.write_bytes(body)
            os.replace(partial, path)
        else:
            self.fs.pipe_file(path, body)  # one PUT: atomic on object stores

    def events(self, kind: str | None = None, event: str | None = None) -> list[dict[str, Any]]:
        pattern = self.path(EVENTS_DIR, kind or "*", "*", "*.json")
        self.fs.invalidate_cache()
        records = [json.loads(self.fs.cat_file(p)) for p in self.fs.glob(pattern)]
        records = [r for r in records if event is None or r["event"] == event]
        return sorted(records, key=lambda r: r["at"])


class ArtifactWriter:
    """Handed to a stage inside `store.writer(...)`: a local folder to fill, metrics to record, and the
    artifact's checkpoint area for resumable long work."""

    def __init__(self, path: Path, checkpoints: CheckpointArea):
        self.path = path
        self.checkpoints = checkpoints
        self.metrics: dict[str, Any] = {}
        self.ref: ArtifactRef | None = None

    def write_json(self, rel: str, obj: Any) -> Path:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str))
        return target


class ArtifactReader:
    """Verified access to a committed artifact's files: local paths, JSON, Parquet, safetensors, HF folders."""

    def __init__(self, store: ArtifactStore, manifest: Manifest):
        self.store = store
        self.manifest = manifest
        self.ref = ArtifactRef(kind=manifest.kind, key=manifest.key, uri=store.uri(manifest.kind, manifest.key),
                               digest=manifest.digest)

    def files(self, prefix: str = "") -> list[str]:
        return sorted(rel for rel in self.manifest.files if rel.startswith(prefix))

    def path(self, rel: str) -> Path:
        entry = self.manifest.files.get(rel)
        if entry is None:
            raise FileNotFoundError(
                f"artifact {self.ref}: no file {rel!r} (it has {len(self.manifest.files)} files, "
                f"e.g. {', '.join(list(self.manifest.files)[:5])})"
            )
        return self.store.verified_local_file(self.manifest.kind, self.manifest.key, rel, entry)

    def dir(self, prefix: str = "") -> Path:
        """A local folder holding every file under `prefix` (e.g. an HF model folder), all verified."""
        rels = self.files(prefix)
        if not rels:
            raise FileNotFoundError(f"artifact {self.ref}: no files under {prefix!r}")
        paths = [self.path(rel) for rel in rels]
        root = paths[0]
        for _ in Path(rels[0]).parts:
            root = root.parent
        return root / prefix if prefix else root

    def read_text(self, rel: str) -> str:
        return self.path(rel).read_text()

    def read_json(self, rel: str) -> Any:
        return json.loads(self.path(rel).read_text())

    def read_table(self, rel: str):
        import pyarrow.parquet as pq

        return pq.read_table(self.path(rel))

    def load_tensors(self, rel: str) -> dict:
        from safetensors.torch import load_file

        return load_file(self.path(rel))
