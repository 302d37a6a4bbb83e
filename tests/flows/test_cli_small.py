"""`linguaforge serve --eval-cron` is checked by Prefect's own cron rule; CLI tables reach pipes uncut."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from linguaforge.flows.cli.common import cron_flag as _cron
from linguaforge.storage import ArtifactStore


@pytest.mark.parametrize("cron", ["0 2 * * *", "0 2 * * MON", "*/15 * * * *", "0 0 1 JAN *", "@daily", "none"])
def test_valid_schedules_are_accepted(cron):
    assert _cron(cron) == cron


@pytest.mark.parametrize("cron", ["every tuesday", "61 2 * * *", "0 2 * *", "0 25 * * *", ""])
def test_invalid_schedules_are_refused_with_the_value_named(cron):
    with pytest.raises(argparse.ArgumentTypeError, match="is not a cron expression") as refused:
        _cron(cron)
    assert repr(cron) in str(refused.value)


def test_piped_listing_prints_whole_keys(tmp_path, repo_root):
    """Output to a pipe is not cut to 80 columns, so a key can be copied from a log; a set COLUMNS still rules."""
    store = ArtifactStore(str(tmp_path / "store"), create=True)
    key = "0123456789abcdef01234567"
    with store.writer("corpus", key, stage="corpus_prep", stage_version=1, params={}) as w:
        w.write_json("x.json", {"x": 1})

    def listing(**columns):
        env = {**{k: v for k, v in os.environ.items() if k != "COLUMNS"}, **columns}
        done = subprocess.run([sys.executable, "-m", "linguaforge.flows.cli", "artifacts", "--store", store.url], cwd=repo_root,
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert key in listing()
    assert key not in listing(COLUMNS="60")
