"""W&B offline runs read back with W&B's own record classes. W&B 0.31 has no Python reader for its offline run files
(`run-<id>.wandb`; the Go core writes them, `wandb sync` uploads them): they are a 7-byte header (":W&B", magic,
version) and LevelDB-log framed records (32 KiB blocks; each chunk a 4-byte checksum, 2-byte length, 1-byte type:
1 whole, 2 first, 3 middle, 4 last) of `wandb_internal_pb2.Record` messages, which is all this reads."""

from __future__ import annotations

import json
from pathlib import Path

BLOCK, HEADER, CHUNK = 32768, 7, 7


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending, out = HEADER, b"", []
    while pos + CHUNK <= len(data):
        if (left := BLOCK - pos % BLOCK) < CHUNK:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + CHUNK:pos + CHUNK + length]
        pos += CHUNK + length
        if kind in (1, 4):
            out.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return out


def runs(folder: Path) -> dict[str, dict]:
    """Every offline run under `folder`/wandb by its display name: project, history rows (step → metrics) and the
    names of the files it saved."""
    found = {}
    for path in Path(folder, "wandb").glob("offline-run-*/run-*.wandb"):
        run = {"project": None, "history": {}, "files": set()}
        name = None
        for record in records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                name, run["project"] = record.run.display_name, record.run.project
            elif kind == "history":
                row = {".".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
                run["history"][row.pop("_step")] = {k: v for k, v in row.items() if not k.startswith("_")}
            elif kind == "files":
                run["files"] |= {f.path for f in record.files.files}
        assert name not in found, f"two W&B runs are named {name}"
        found[name] = run
    return found
