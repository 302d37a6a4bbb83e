"""A folder a command writes its results into (`eval --out`, `report --out`): one linguaforge made, or refused.

A folder that holds files is written into only if a linguaforge command made it (it holds OUTPUT_MARKER); a new
or empty folder gets the marker first. So a second `linguaforge eval` into the same --out adds and replaces its
own results, while a folder of someone else's files (their own report.md) is never written over.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.publish import overlapping

OUTPUT_MARKER = ".linguaforge-output.json"


def claim_output_folder(folder: str | Path, what: str, inputs: list[str | Path] = (), create: bool = True) -> Path:
    """`folder`, made (or found) as a linguaforge output folder; refused, naming why, if it cannot be one.
    `create=False` checks only (before the work starts): nothing is made until there is something to write."""
    folder = Path(folder).expanduser()
    if (clash := overlapping(folder, list(inputs))) is not None:
        raise InputError(f"{what} {folder} is, lies inside, or contains the input {clash}; a command never writes "
                         "over what it reads: choose another folder")
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise InputError(f"{what} {folder}: exists and is not a folder")
    if folder.is_dir() and not (folder / OUTPUT_MARKER).is_file():
        if others := sorted(p.name for p in folder.iterdir()):
            raise InputError(f"{what} {folder} holds files linguaforge did not write (e.g. {others[0]}); it never "
                             "writes over them: choose a new or empty folder")
    if not create:
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / OUTPUT_MARKER).is_file():
            (folder / OUTPUT_MARKER).write_text(json.dumps({"made_by": "linguaforge", "at": time.time()}))
    except OSError as exc:
        raise InputError(f"{what} {folder}: cannot be written ({exc.strerror or exc})") from None
    return folder
