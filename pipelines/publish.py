"""An output folder written as one transaction: built beside the target, locked while written, swapped in whole.

    <parent>/<name>/                                  the output: the complete old folder or the complete new one
    <parent>/.<name>.linguaforge/lock                 held (flock) while a command writes <name>; says by whom
    <parent>/.<name>.linguaforge/staging/work-*       the new folder being built (with its owner record)
    <parent>/.<name>.linguaforge/journal.json         only during a two-rename publish (see below)

Publishing exchanges the finished folder with the target in one `renameat2(RENAME_EXCHANGE)` call, so a kill at
any instant leaves either the complete old folder or the complete new one; the old one is then removed from the
staging area (a kill there leaves it to the next command's sweep). Files in the old folder that the command does
not write (a user's notes) are carried into the new one first, as hard links. On a filesystem without
RENAME_EXCHANGE the publish is two renames under a journal, which the next command into the same target
completes. Everything under `.<name>.linguaforge` is removed when the command ends.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
import time
from pathlib import Path

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.faults import fault_point
from linguaforge.storage.staging import HOST, StagingArea

_AT_FDCWD = -100
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}


def _renameat2(src: Path, dst: Path, flags: int) -> None:
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is None or os.environ.get("LINGUAFORGE_NO_RENAMEAT2") == "1":  # the fallback is tested too
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if function(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), ctypes.c_uint(flags)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(dst))


def overlapping(target: Path, inputs: list[str | Path]) -> str | None:
    """The first input that the output folder equals, lies inside, or contains (local paths only), or None."""
    out = Path(os.path.realpath(target))
    for item in inputs:
        if item is None or "://" in str(item):
            continue
        path = Path(os.path.realpath(os.path.expanduser(str(item))))
        if out == path or path in out.parents or out in path.parents:
            return str(item)
    return None


def check_output_folder(out_dir: Path, replace: bool, inputs: list[str | Path] = ()) -> None:
    """Before any work: the output is a folder (or nothing yet), empty unless `replace`, and apart from every input."""
    if (clash := overlapping(out_dir, list(inputs))) is not None:
        raise InputError(f"output {out_dir} is, lies inside, or contains the input {clash}; a command never writes "
                         "over what it reads: choose another output folder")
    if out_dir.is_symlink():
        raise InputError(f"output {out_dir} is a symbolic link; name the real folder")
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise InputError(f"output {out_dir}: exists and is not a folder")
    present = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    if present and not replace:
        raise InputError(f"output folder {out_dir} is not empty ({len(present)} files, e.g. {present[0]}); choose "
                         "another output, or --force to replace the files the command writes (others are kept)")


class OutputTransaction:
    """`with OutputTransaction(target, replace, inputs) as tx:` build the new folder in `tx.work`, then
    `tx.publish(weight_suffixes)`. Leaving the block without publishing changes nothing at the target."""

    def __init__(self, target: str | Path, replace: bool = False, inputs: list[str | Path] = ()):
        self.target = Path(os.path.abspath(os.path.expanduser(str(target))))
        self.replace, self.inputs = replace, list(inputs)
        self.meta = self.target.parent / f".{self.target.name}.linguaforge"
        self.area = StagingArea(self.meta / "staging", self.meta)
        self.work: Path = Path()
        self._folders: list[Path] = []  # staging folders this command made, released at the end
        self._lock_file = None

    def __enter__(self) -> OutputTransaction:
        check_output_folder(self.target, self.replace, self.inputs)
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
        except PermissionError as exc:
            raise InputError(f"output {self.target}: cannot write in {self.target.parent} ({exc.strerror})") from None
        try:
            self._recover()
            self.area.sweep()  # old folders and unfinished work of commands that were killed
            self.work = self._staged("work-")
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            for folder in self._folders:
                self.area.release(folder)
        finally:
            self._unlock()

    def _staged(self, prefix: str) -> Path:
        self._folders.append(self.area.new(prefix))
        return self._folders[-1] / "out"

    # -- the lock ---------------------------------------------------------------------------------------------
    def _lock(self) -> None:
        """Exclusive, without waiting: a second command into the same target fails at once, naming the holder."""
        while True:
            self.meta.mkdir(exist_ok=True)
            handle = open(self.meta / "lock", "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise InputError(f"output {self.target} is being written by {holder}; wait for it to finish, "
                                 "or choose another output") from None
            try:  # the file may have been removed by its last holder between our open and our lock: start again
                same = os.fstat(handle.fileno()).st_ino == os.stat(self.meta / "lock").st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {HOST} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        self._lock_file = handle

    def _unlock(self) -> None:
        if self._lock_file is None:
            return
        leftovers = [p for p in self.meta.rglob("*") if p.name != "lock" and not p.is_dir()]
        if not leftovers:  # nothing of an unfinished publish to keep for the next command: leave no trace
            (self.meta / "lock").unlink(missing_ok=True)
            shutil.rmtree(self.meta, ignore_errors=True)
        self._lock_file.close()
        self._lock_file = None

    # -- publishing ---------------------------------------------------------------------------------------------
    def publish(self, weight_suffixes: tuple[str, ...] = (".safetensors", ".bin", ".index.json")) -> None:
        """The finished `work` folder becomes the target, atomically. Checked again here, under the lock: a target
        that another command filled since the start is not replaced without `replace`."""
        fault_point("publish.start")
        if self.target.exists():
            check_output_folder(self.target, self.replace)
            self._carry_over(weight_suffixes)
            fault_point("publish.carried")
        try:
            self._swap()
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            self._swap_with_journal()
        old = self.work
        fault_point("publish.swapped")
        if old.exists():  # the old folder, now at the work path: ours to remove
            shutil.rmtree(old)
        fault_point("publish.cleaned")

    def _swap(self) -> None:
        if self.target.exists():
            _renameat2(self.work, self.target, _RENAME_EXCHANGE)
        else:
            try:
                _renameat2(self.work, self.target, _RENAME_NOREPLACE)
            except FileExistsError:
                raise InputError(f"output {self.target} appeared while the command ran; nothing was replaced") from None

    def _swap_with_journal(self) -> None:
        """Two renames; a kill between them leaves the journal, from which the next command completes the swap."""
        old = self._staged("old-")
        journal = self.meta / "journal.json"
        _write_synced(journal, {"target": str(self.target), "new": str(self.work), "old": str(old)})
        fault_point("publish.journal")
        if self.target.exists():
            os.rename(self.target, old)
            fault_point("publish.old-moved")
        os.rename(self.work, self.target)
        fault_point("publish.new-moved")
        journal.unlink()
        self.work = old  # what is left to remove

    def _recover(self) -> None:
        """Complete a journalled swap that a kill interrupted (the new folder was whole before the journal)."""
        journal = self.meta / "journal.json"
        if not journal.exists():
            return
        record = json.loads(journal.read_text())
        new, old = Path(record["new"]), Path(record["old"])
        if not self.target.exists():
            os.rename(new if new.exists() else old, self.target)
        journal.unlink()

    def _carry_over(self, weight_suffixes: tuple[str, ...]) -> None:
        """Files of the old folder that this command does not write go into the new one (hard links, or copies
        across devices), so that the swap keeps them; other weight files beside ours are refused, since the folder
        would load as a mixture."""
        for dirpath, dirnames, filenames in os.walk(self.target):
            here = Path(dirpath)
            rel = here.relative_to(self.target)
            for name in [*dirnames, *filenames]:
                source, dest = here / name, self.work / rel / name
                if source.is_dir() and not source.is_symlink():
                    dest.mkdir(exist_ok=True)
                    continue
                if dest.exists() or dest.is_symlink():
                    continue  # ours replaces it
                if name.endswith(weight_suffixes):
                    raise InputError(f"output folder {self.target} holds weight files this command does not write "
                                     f"({(rel / name).as_posix()}); remove them first (linguaforge never deletes "
                                     "files it did not write)")
                _keep(source, dest)
            dirnames[:] = [d for d in dirnames if not (here / d).is_symlink()]


def _keep(source: Path, dest: Path) -> None:
    if source.is_symlink():
        os.symlink(os.readlink(source), dest)
        return
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def _write_synced(path: Path, record: dict) -> None:
    partial = path.with_suffix(".partial")
    with open(partial, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
