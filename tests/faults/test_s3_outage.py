"""The S3 endpoint goes away in the middle of a commit's multipart upload (a TCP proxy in front of the real moto
server resets every connection): a short outage is ridden out by retries and the artifact commits intact; a
long one fails with a clear StoreError and commits nothing; once the endpoint is back the same commit succeeds.
Outcomes go to build/reliability/s3_outage.json for docs/reliability.md."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from linguaforge.storage import ArtifactStore, StoreError
from tests.faults.tcp_proxy import Proxy

pytestmark = pytest.mark.slow
PAYLOAD = 24 << 20  # five 5 MiB parts
OUTCOMES: list[dict] = []


@pytest.fixture
def proxied(s3_bucket, s3_endpoint, tmp_path):
    proxy = Proxy(int(s3_endpoint.rsplit(":", 1)[1]))
    store = ArtifactStore(f"s3://{s3_bucket}/runs", cache_dir=tmp_path / "cache", multipart_chunksize=5 << 20,
                          storage_options={"endpoint_url": proxy.url}, upload_attempts=2, upload_backoff_s=0.5)
    return proxy, store


def _commit(store: ArtifactStore, key: str, data: bytes):
    with store.writer("blob", key, stage="upload-test", stage_version=1, params={}) as w:
        (w.path / "data.bin").write_bytes(data)
    return w.ref


def _outage_mid_upload(proxy: Proxy, until: threading.Event | None) -> threading.Thread:
    """Take the endpoint away once a third of the payload went up; bring it back when `until` is set."""
    crossed = proxy.arm(PAYLOAD // 3)

    def run():
        crossed.wait(timeout=600)
        proxy.go_away()
        if until is not None:
            until.wait(timeout=600)
            proxy.come_back()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_short_outage_mid_upload_is_retried_and_the_artifact_commits_intact(proxied):
    proxy, store = proxied
    data = os.urandom(PAYLOAD)
    _outage_mid_upload(proxy, until=proxy.retried)  # back as soon as the client has tried again
    ref = _commit(store, "short", data)
    assert proxy.attempts_while_down >= 1  # the outage happened while the upload ran
    assert store.audit() == {}
    assert store.open(ref).path("data.bin").read_bytes() == data
    OUTCOMES.append({"case": "S3 endpoint away mid-upload, back after the client's first retry",
                     "outcome": "committed intact after retries", "attempts_while_down": proxy.attempts_while_down})
    _record()


def test_a_long_outage_fails_clearly_commits_nothing_and_the_rerun_succeeds(proxied):
    proxy, store = proxied
    data = os.urandom(PAYLOAD)
    _outage_mid_upload(proxy, until=None)
    with pytest.raises(StoreError) as failure:
        _commit(store, "long", data)
    message = str(failure.value)
    assert "could not upload blob/long/data.bin" in message and "nothing was committed" in message
    assert "Traceback" not in message
    proxy.come_back()
    assert not store.exists("blob", "long")  # no manifest: whatever parts reached the bucket are not an artifact
    ref = _commit(store, "long", data)  # the run again, with the endpoint back
    assert store.audit() == {} and store.open(ref).path("data.bin").read_bytes() == data
    OUTCOMES.append({"case": "S3 endpoint away mid-upload for good, then back", "outcome":
                     "clear StoreError, nothing committed; the re-run committed intact",
                     "attempts_while_down": proxy.attempts_while_down, "message": message[:160]})
    _record()


def _record() -> None:
    out = Path(__file__).resolve().parents[2] / "build" / "reliability" / "s3_outage.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(OUTCOMES, indent=1))
