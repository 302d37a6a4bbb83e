"""The walls between the layers, read from the source's import statements (every import in a file counts,
lazy ones inside functions included: a lazy import is still an arrow).

    flows  →  tasks  →  pipelines, storage        (and flows → pipelines, storage directly)

pipelines/ is the science: it never imports flows, tasks or prefect, so it runs without an orchestrator.
tasks/ never reaches up into flows/. And no module imports itself round a loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("flows", "tasks", "pipelines", "storage")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["linguaforge", *parts])


def _imports(path: Path) -> set[str]:
    """Every module this file names in an import, absolute names only (the project has no relative ones)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            # `from linguaforge.pipelines import training` imports the submodule too
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def project_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for layer in LAYERS for p in (ROOT / layer).rglob("*.py")}
    return {module: {name for name in _imports(path) if name in files} | {
        name for name in _imports(path) if not name.startswith("linguaforge.")} for module, path in files.items()}


def _layer(module: str) -> str:
    return module.split(".")[1] if module.startswith("linguaforge.") else module.split(".")[0]


def _arrows(source_layer: str, forbidden: set[str]) -> list[str]:
    return sorted(f"{module} → {name}" for module, names in project_graph().items() if _layer(module) == source_layer
                  for name in names if _layer(name) in forbidden)


def test_pipelines_import_no_orchestration():
    assert _arrows("pipelines", {"flows", "tasks", "prefect"}) == []


def test_storage_imports_no_orchestration_and_no_science():
    assert _arrows("storage", {"flows", "tasks", "pipelines", "prefect"}) == []


def test_tasks_do_not_import_flows():
    assert _arrows("tasks", {"flows"}) == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in graph:
                continue
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_sees_a_loop():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_loops():
    assert _cycles(project_graph()) == []


ROOMS = ("maet", "merging", "mindmerger", "benchmarks", "generation", "demo", "training")


def room_of(module: str) -> str:
    """flows, tasks, storage; a method's room under pipelines/; or the shared pipelines modules."""
    parts = module.split(".")
    if parts[1] == "pipelines":
        return f"pipelines/{parts[2]}" if len(parts) > 3 and parts[2] in ROOMS else "pipelines/shared"
    return parts[1]


def room_edges() -> list[tuple[str, str]]:
    graph = project_graph()
    return sorted({(room_of(m), room_of(n)) for m, names in graph.items() for n in names
                   if n.startswith("linguaforge.") and room_of(m) != room_of(n)})


def test_rooms_form_no_loop_and_shared_code_knows_no_room():
    edges = room_edges()
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    assert _cycles(graph) == []
    # shared code may use the layer below (storage: staging folders with owners), never a method's room
    assert [b for a, b in edges if a == "pipelines/shared" and b != "storage"] == []


def mermaid() -> str:
    edges = room_edges()
    rooms = sorted({room for edge in edges for room in edge})
    lines = ["```mermaid", "graph TD"] + [f'    {r.replace("/", "_")}["{r}"]' for r in rooms]
    lines += [f'    {a.replace("/", "_")} --> {b.replace("/", "_")}' for a, b in edges]
    return "\n".join(lines + ["```"])


def test_architecture_picture_is_the_code():
    """ARCHITECTURE.md's import graph is drawn from the code: regenerate it with
    `python -c 'from tests.architecture.test_import_graph import mermaid; print(mermaid())'`."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    start, end = "<!-- import-graph:start -->\n", "\n<!-- import-graph:end -->"
    assert text[text.index(start) + len(start): text.index(end)] == mermaid()
