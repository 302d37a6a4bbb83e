"""The temporary Prefect API of a `linguaforge run` without PREFECT_API_URL.

It is Prefect's own ephemeral server app (the one Prefect would start by itself), started here instead so that
it lives in a process group of its own (a Ctrl-C at the terminal reaches the CLI, which stops the run, marks it
cancelled, and only then stops the server) and dies with the CLI when the CLI is killed (PR_SET_PDEATHSIG):
a killed run leaves no server behind.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from linguaforge.pipelines.interrupt import die_with_parent


def _site_packages() -> str:
    """Where prefect is installed (found without importing it: that takes seconds)."""
    return str(Path(importlib.util.find_spec("prefect").origin).parent.parent)


class ServerDidNotStart(RuntimeError):
    pass


class TemporaryServer:
    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout_s: float) -> str:
        """Start it and wait until it answers; returns its API URL."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        env.pop("PREFECT_API_URL", None)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir", _site_packages(), "--factory",
                 "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
                 "--log-level", "error", "--lifespan", "on"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGKILL))
        self.url = f"http://127.0.0.1:{port}/api"
        self._wait_healthy(timeout_s)
        return self.url

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise ServerDidNotStart(f"the temporary Prefect server exited with {self.proc.returncode} while "
                                        f"starting; its log: {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ServerDidNotStart(
                    f"the temporary Prefect server did not answer within {timeout_s:.0f} s (a very busy machine?); "
                    "raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or start one with `linguaforge server` "
                    "and set PREFECT_API_URL")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
