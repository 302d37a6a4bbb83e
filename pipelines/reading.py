"""Reading a small JSON file that a user points at (a DeepSpeed config, an exemplar file, translated queries):
every way it can be wrong is an InputError that names what the file is meant to be, and the file."""

from __future__ import annotations

import json
from typing import Any

import fsspec

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.locations import check_scheme


def read_json(uri: str, what: str, expect: type = dict, storage_options: dict | None = None) -> Any:
    """The parsed JSON at `uri` (a path or fsspec URL), which must be an `expect` (dict or list)."""
    check_scheme(uri, what)
    try:
        with fsspec.open(uri, "r", encoding="utf-8", **dict(storage_options or {})) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise InputError(f"{what} {uri}: not found") from None
    except IsADirectoryError:
        raise InputError(f"{what} {uri}: is a folder, not a JSON file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {uri}: not UTF-8 text (byte {exc.start}); expected a JSON file") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} {uri}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, expect):
        kind = "an object" if expect is dict else "a list"
        raise InputError(f"{what} {uri}: expected {kind} at the top level, got {type(data).__name__}")
    return data
