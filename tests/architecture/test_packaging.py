"""`pip install linguaforge` adds exactly one top-level import name, and the wheel holds every package.

The wheel is built from a copy of the source (so a concurrent run's build/ folder cannot interfere) and
installed with pip into an empty target folder: what lands there is what a user's site-packages gets.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("flows", "tasks", "pipelines", "storage")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for layer in LAYERS:
        shutil.copytree(ROOT / layer, src / layer, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(src)], check=True, timeout=600)
    (built,) = out.glob("linguaforge-*.whl")
    return built


def test_install_adds_only_linguaforge(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=600)
    names = {p.name for p in target.iterdir() if p.name != "bin"}
    assert {n for n in names if not n.endswith(".dist-info")} == {"linguaforge"}
    assert sorted(p.name for p in (target / "linguaforge").iterdir() if p.name != "__pycache__") == sorted(LAYERS)
    console = next((target / "bin").glob("linguaforge"))
    assert "from linguaforge.flows.cli import main" in console.read_text()


def test_wheel_holds_every_package_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for layer in LAYERS:
        for init in (ROOT / layer).rglob("__init__.py"):
            assert f"linguaforge/{init.relative_to(ROOT).as_posix()}" in names, f"{init} is not in the wheel"
        for source in (ROOT / layer).rglob("*.py"):
            assert f"linguaforge/{source.relative_to(ROOT).as_posix()}" in names, f"{source} is not in the wheel"
    assert "linguaforge/pipelines/benchmarks/presets.yaml" in names
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"linguaforge"}
