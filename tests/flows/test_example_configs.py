"""Every run configuration in configs/ loads, and its stages are what its comments say: each `# stage PATH: k=v ...`
line is checked against the loaded configuration (world size, precision, checkpointing, device, GPU slots), so a
comment promising 8 GPUs cannot sit above a stage that asks for one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from linguaforge.flows.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
RUN_CONFIGS = [p for p in CONFIGS if "merge" not in p.name]
STAGE_LINE = re.compile(r"^# stage ([\w.]+): (.+)$", re.MULTILINE)


def _value(text: str):
    return yaml.safe_load(text)  # true → True, 8 → 8, bf16 → "bf16"


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=[p.name for p in RUN_CONFIGS])
def test_every_stage_is_what_its_comment_says(path):
    config = load_config(path)
    promises = STAGE_LINE.findall(path.read_text())
    if path.name != "demo.yaml":
        assert promises, f"{path.name} says nothing checkable about its stages (# stage PATH: k=v ...)"
    for where, pairs in promises:  # "run" is the configuration itself
        node = config
        for part in where.split(".") if where != "run" else []:
            node = getattr(node, part)
        for pair in pairs.split():
            field, _, expected = pair.partition("=")
            actual = getattr(node, field)
            assert actual == _value(expected), f"{path.name}: {where}.{field} is {actual!r}, the comment says {expected}"

def test_the_stage_lines_catch_a_config_that_breaks_its_promise(tmp_path):
    path = next(p for p in RUN_CONFIGS if p.name.startswith("maet-llama3"))
    broken = tmp_path / path.name
    broken.write_text(path.read_text().replace("processes: 8", "processes: 1", 1))
    with pytest.raises(AssertionError, match="processes is 1, the comment says 8"):
        test_every_stage_is_what_its_comment_says(broken)
