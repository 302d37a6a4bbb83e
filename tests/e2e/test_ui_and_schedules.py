"""The Prefect UI and schedules against the deployed pipeline: a real headless Chromium (Debian's, driven by
Playwright) submits the deployment's run form with an edited parameter and the run completes on the worker;
a parameter that fails validation is refused before anything runs; a one-minute cron creates runs."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import api, wait_for_state

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is installed by `make test` (apt)")
def test_run_form_in_the_ui_submits_and_the_run_completes(deployed):
    from playwright.sync_api import sync_playwright

    base_api, deployment = deployed["api"], deployed["deployments"]["pipeline"]
    ui = base_api.removesuffix("/api")
    edited_store = f"s3://{deployed['bucket']}/store-ui-form"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{ui}/deployments/deployment/{deployment}/run", timeout=120_000)  # a loaded server is slow
            page.wait_for_load_state("networkidle")
            # the form is the run configuration: edit the store URL field, as a user would
            store_field = page.locator("textarea").nth(_index_of_value(page, deployed["config"]["store"]["url"]))
            store_field.fill(edited_store)
            _submit_until_created(page)
            # the UI goes back to the deployment once the run is created
            page.wait_for_url(re.compile(r".*/deployments/deployment/[0-9a-f-]+(\?.*)?$"), timeout=120_000)
        finally:
            browser.close()
    runs = [r for r in api(base_api, "POST", "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment]}}})
            if r["parameters"]["config"]["store"]["url"] == edited_store]
    assert len(runs) == 1, "the form did not create exactly one run with the edited parameter"
    assert wait_for_state(base_api, runs[0]["id"], {"COMPLETED", "FAILED", "CRASHED"}, timeout=600) == "COMPLETED"


def _submit_until_created(page, attempts: int = 3) -> None:
    """Click Submit and wait for the UI's create-run request to be answered. A busy server (SQLite locked on a
    loaded machine) answers 503, nothing created, and the UI shows an error toast: the user submits again, and
    so does the test. Any other answer than 201 fails with what the server and the page said."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    def page_says() -> str:
        return f"the page says: {page.inner_text('body')[:1000]}"

    for _ in range(attempts):
        try:
            with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/create_flow_run"),
                                      timeout=180_000) as answer:  # generous: the server may be slow, not wrong
                page.get_by_role("button", name="Submit").click()
        except PlaywrightTimeout as waited:
            raise AssertionError(f"Submit sent no create-run request; {page_says()}") from waited
        if answer.value.status == 201:
            return
        assert answer.value.status == 503, \
            f"the run form's request was answered {answer.value.status}: {answer.value.text()[:500]}; {page_says()}"
    raise AssertionError(f"the server answered 503 to {attempts} submits of the run form")


def _index_of_value(page, value: str) -> int:
    index = page.evaluate("(v) => [...document.querySelectorAll('textarea')].findIndex(e => e.value === v)", value)
    assert index >= 0, f"no field holds {value!r}"
    return index


def test_invalid_parameters_are_refused_before_anything_runs(deployed):
    base_api, deployment = deployed["api"], deployed["deployments"]["pipeline"]
    bad = json.loads(json.dumps(deployed["config"]))
    bad["probe"]["k1_percent"] = 150
    before = api(base_api, "POST", "/flow_runs/count", {"deployments": {"id": {"any_": [deployment]}}})
    with pytest.raises(Exception) as refused:
        api(base_api, "POST", f"/deployments/{deployment}/create_flow_run", {"parameters": {"config": bad}})
    assert getattr(refused.value, "code", None) == 409
    assert "k1_percent" in refused.value.read().decode()
    assert api(base_api, "POST", "/flow_runs/count", {"deployments": {"id": {"any_": [deployment]}}}) == before


def test_a_one_minute_cron_creates_runs_and_is_removed(deployed):
    base_api, deployment = deployed["api"], deployed["deployments"]["evaluate"]
    schedule = api(base_api, "POST", f"/deployments/{deployment}/schedules",
                   [{"schedule": {"cron": "* * * * *", "timezone": "UTC"}, "active": True}])[0]
    try:
        deadline = time.monotonic() + 120
        runs = []
        while time.monotonic() < deadline and not runs:
            runs = api(base_api, "POST", "/flow_runs/filter",
                       {"deployments": {"id": {"any_": [deployment]}}, "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}})
            time.sleep(2)
        assert runs, "the cron schedule created no runs within two minutes"
        assert all(r["auto_scheduled"] for r in runs)
    finally:
        api(base_api, "DELETE", f"/deployments/{deployment}/schedules/{schedule['id']}")
        for r in api(base_api, "POST", "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment]}}}):
            if r["state_type"] == "SCHEDULED":
                api(base_api, "DELETE", f"/flow_runs/{r['id']}")
    assert api(base_api, "GET", f"/deployments/{deployment}/schedules") == []
