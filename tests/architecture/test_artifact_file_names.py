"""An artifact's file names are contracts between the stage that writes them and every reader: each is spelled
once, as a named constant, and imported wherever it is read."""

from __future__ import annotations

import ast
from pathlib import Path

from linguaforge.pipelines.benchmarks import files as benchmark_files
from linguaforge.pipelines.maet.cpt import DELTA_FILE
from linguaforge.pipelines.maet.decompose import ABILITY_FILE
from linguaforge.pipelines.maet.importance import MASK_FILE
from linguaforge.pipelines.training.loop import TRAIN_FILE
from linguaforge.tasks.common import MODEL_FOLDER

ROOT = Path(__file__).resolve().parents[2]
NAMES = {DELTA_FILE, ABILITY_FILE, MASK_FILE, TRAIN_FILE, *(v for k, v in vars(benchmark_files).items()
                                                              if k.endswith("_FILE"))}


def _literals(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)
            and isinstance(node.value, str)}


def test_every_artifact_file_name_is_spelled_in_one_module():
    spelled: dict[str, list[str]] = {name: [] for name in NAMES}
    for layer in ("flows", "tasks", "pipelines", "storage"):
        for path in sorted((ROOT / layer).rglob("*.py")):
            for name in NAMES & _literals(path):
                spelled[name].append(str(path.relative_to(ROOT)))
    assert {name: where for name, where in spelled.items() if len(where) != 1} == {}


def _names_the_model_folder(node: ast.AST) -> bool:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):  # folder / "model"
        return isinstance(node.right, ast.Constant) and node.right.value == MODEL_FOLDER
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "of"
            and any(isinstance(a, ast.Constant) and a.value == MODEL_FOLDER for a in node.args))  # Source.of


def test_the_model_folder_is_read_from_its_constant():
    uses = [str(p.relative_to(ROOT)) for layer in ("flows", "tasks") for p in sorted((ROOT / layer).rglob("*.py"))
            if any(_names_the_model_folder(n) for n in ast.walk(ast.parse(p.read_text())))]
    assert uses == []
