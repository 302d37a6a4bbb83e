"""Shared fixtures: real services started as subprocesses on 127.0.0.1 and stopped by PID."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> str:
    """A real S3 HTTP endpoint: moto's server on 127.0.0.1, as s3fs's own tests use."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


@pytest.fixture
def prefect_api(tmp_path, monkeypatch):
    """A temporary Prefect API of our own (a database of its own), stopped while the test's output streams
    are still open."""
    from prefect.testing.utilities import prefect_test_harness

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with prefect_test_harness(server_startup_timeout=120):  # a loaded machine starts it slowly
        yield


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """Credentials and endpoint in the environment, as a user on MinIO would set them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    return s3_endpoint


@pytest.fixture
def s3_bucket(s3_env) -> str:
    import boto3

    name = f"lf-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


TINY_LANGUAGES = ["en", "de", "zh", "sw", "bn"]


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory) -> dict[str, Path]:
    """A small demo world with its trained tokenizers and tiny (untrained) models, built once per session:
    {"world": folder, "llm": HF folder, "encoder": HF folder}."""
    from linguaforge.pipelines.demo.models import (
        build_tiny_encoder,
        build_tiny_llm,
        train_encoder_tokenizer,
        train_llm_tokenizer,
        world_texts,
    )
    from linguaforge.pipelines.demo.world import WorldSpec, generate_world

    root = tmp_path_factory.mktemp("demo-assets")
    spec = WorldSpec(languages=TINY_LANGUAGES, general_docs=120, ability_problems=300, translation_pairs=100,
                     query_items=60, test_items=12)
    generate_world(spec, root / "world")
    llm_tok = train_llm_tokenizer(world_texts(root / "world"), 600, root / "llm")
    enc_tok = train_encoder_tokenizer(world_texts(root / "world"), 600, root / "encoder")
    build_tiny_llm(llm_tok, root / "llm", hidden=32, layers=2, seed=0)
    build_tiny_encoder(enc_tok, root / "encoder", hidden=32, layers=2, seed=0)
    return {"world": root / "world", "llm": root / "llm", "encoder": root / "encoder"}


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> str:
    """A real `prefect server start` process (SQLite) on 127.0.0.1; yields its API URL."""
    import urllib.request

    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "true", "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/db.sqlite"}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "wb")
    url = f"http://127.0.0.1:{port}/api"
    env["PREFECT_UI_API_URL"] = url  # the UI's own calls go to this server, not the default port
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300  # a loaded machine starts a server slowly
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not become healthy; log: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop_process(proc)
        log.close()
