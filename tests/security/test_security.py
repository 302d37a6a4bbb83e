"""What linguaforge promises about code it runs and secrets it holds.

- Nothing is unpickled from a store or a download: the one `torch.load` reads the official MindMerger
  checkpoint, with `weights_only=True`. Checked on the syntax tree of every project file.
- No model code from a hub runs: `trust_remote_code` is never passed.
- The store refuses kinds and keys that would address a path outside its root.
- Credentials never appear in what a run writes: a real run on an S3 endpoint with distinctive fake
  credentials, then a byte search of the store, the Prefect home (database included) and the output.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from linguaforge.storage import ArtifactStore, StoreError

ROOT = Path(__file__).resolve().parents[2]
# the project's own code: not what lives in hidden folders under it (the benches' anchor venvs, bench/.anchors)
PROJECT = [p for folder in ("flows", "tasks", "pipelines", "storage", "bench") for p in (ROOT / folder).rglob("*.py")
           if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_the_only_unpickling_is_the_official_checkpoint_with_weights_only():
    loads = []
    for path in PROJECT:
        for node, name in _calls(path):
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if name in ("torch.load", "pickle.load", "pickle.loads", "cloudpickle.load", "joblib.load",
                        "pd.read_pickle", "pandas.read_pickle", "dill.load"):
                loads.append((path.relative_to(ROOT).as_posix(), name, keywords.get("weights_only")))
            if name in ("np.load", "numpy.load"):
                assert keywords.get("allow_pickle") in (None, "False"), f"{path}: np.load with allow_pickle"
    assert loads == [("pipelines/mindmerger/checkpoint.py", "torch.load", "True")]


def test_no_remote_code_is_trusted():
    for path in PROJECT:
        for node, name in _calls(path):
            for k in node.keywords:
                assert k.arg != "trust_remote_code", f"{path}:{node.lineno}: {name}(trust_remote_code=...)"


@pytest.mark.parametrize("kind, key", [("..", "x"), ("delta", ".."), ("delta", "../../etc"), ("/etc", "x"),
                                       ("delta", "a/b"), ("", "x"), ("delta", "x" * 300)])
def test_store_refuses_names_that_escape_its_root(tmp_path, kind, key):
    store = ArtifactStore(str(tmp_path / "store"), cache_dir=tmp_path / "cache")
    for operation in (store.exists, store.manifest, store.delete):
        with pytest.raises(StoreError, match="not a plain name"):
            operation(kind, key)
    with pytest.raises(StoreError, match="not a plain name"):
        with store.writer(kind, key, stage="s", stage_version=1, params={}):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


@pytest.mark.slow
def test_credentials_never_reach_what_a_run_writes(s3_bucket, tmp_path, repo_root, monkeypatch):
    from tests.flows.test_cli_run import TINY

    secret, key_id = "SeCrEt-8f3a91c2d7e4b6a0", "AKIAFAKE7Q2W9E4R"
    import boto3

    # moto accepts any credentials: the bucket made with the fixture's is readable with ours
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    data = json.loads(json.dumps(TINY))
    data["mindmerger"] = {**data["mindmerger"], "llms": ["maet"]}
    data["store"] = {"url": f"s3://{s3_bucket}/runs", "cache_dir": str(tmp_path / "cache"),
                     "storage_options": {"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(data))
    env = {**os.environ, "COLUMNS": "200", "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    run = subprocess.run([sys.executable, "-m", "linguaforge.flows.cli", "run", str(config)], cwd=repo_root, env=env,
                         capture_output=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    written = [run.stdout, run.stderr]
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    objects = s3.list_objects_v2(Bucket=s3_bucket, Prefix="runs/")["Contents"]
    assert any(o["Key"].endswith("manifest.json") for o in objects)
    written += [s3.get_object(Bucket=s3_bucket, Key=o["Key"])["Body"].read() for o in objects]
    written += [p.read_bytes() for folder in (tmp_path / "cache", tmp_path / "prefect-home")
                for p in folder.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".db") for p in (tmp_path / "prefect-home").rglob("*"))  # the database was searched
    for blob in written:
        assert secret.encode() not in blob and key_id.encode() not in blob


def test_a_secret_nested_in_storage_options_is_refused_and_written_nowhere(tmp_path, repo_root):
    """The guard walks nested options: a run configuration with a credential under client_kwargs is refused before
    anything starts, and the secret appears in nothing the command printed or wrote."""
    secret = "NeStEd-5e9b1d77c0a2"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"store": {"url": str(tmp_path / "store"), "cache_dir": str(tmp_path / "cache"),
                                                "storage_options": {"client_kwargs": {"aws_secret_access_key": secret,
                                                                                      "region_name": "x"}}}}))
    env = {**os.environ, "COLUMNS": "200", "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    run = subprocess.run([sys.executable, "-m", "linguaforge.flows.cli", "run", str(config)], cwd=repo_root, env=env,
                         capture_output=True, timeout=300)
    assert run.returncode == 2 and b"client_kwargs.aws_secret_access_key" in run.stderr, run.stderr[-2000:]
    written = [run.stdout, run.stderr] + [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p != config]
    assert all(secret.encode() not in blob for blob in written)
    assert not (tmp_path / "store").exists() and not (tmp_path / "prefect-home").exists()
