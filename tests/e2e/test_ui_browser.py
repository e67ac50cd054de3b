"""
The Airflow UI in headless Chromium (Playwright driving the system's /usr/bin/chromium; no
``playwright install``): sign in, add a Script Runner connection through the form, save it and
test it. Screenshots go to ``test-output/`` (gitignored).

Under CI (``CI=true``) a missing browser or Playwright fails the test; elsewhere it is skipped
with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from airflow_provider_scriptrunner.client.conn_fields import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from tests.e2e.deployment import ADMIN_USER, HOST

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("SCRIPTRUNNER_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output"
CONN_ID = "scriptrunner_from_ui"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(
            f"{reason}; CI must run the browser test (.ci/run installs chromium, the test extra Playwright)"
        )
    pytest.skip(reason)


@pytest.fixture(scope="package")  # package scope, so it is checked before Airflow starts
def chromium_available():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[test]')")
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser(chromium_available):
    # Module scope: Playwright's sync API keeps an asyncio loop running in this thread for as
    # long as its context is open, which would break every later test that calls asyncio.run().
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def cleanup_connection(api):
    yield
    api.request("DELETE", f"/api/v2/connections/{CONN_ID}", expect=(204, 404))


def test_add_and_test_a_script_runner_connection_in_the_ui(
    page, airflow, api, scriptrunner, cleanup_connection
):
    from playwright.sync_api import expect

    SCREENSHOTS.mkdir(exist_ok=True)

    # Signing in: the UI sends an anonymous visitor to the simple auth manager's login page.
    page.goto(f"{airflow.api_url}/connections")
    page.locator("input[name=username]").fill(ADMIN_USER)
    page.locator("input[name=password]").fill(airflow.admin_password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/connections")

    # Add Connection, type Script Runner: the form shows our relabelled standard fields.
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox").fill("Script Runner")
    page.get_by_role("option", name="Script Runner", exact=True).click()
    relabeling = UI_FIELD_BEHAVIOUR["relabeling"]
    for field in ("host", "login", "password"):
        expect(dialog.locator("label", has_text=relabeling[field])).to_be_visible()
    host = dialog.locator("input[name=host]")
    expect(host).to_have_attribute("placeholder", UI_FIELD_BEHAVIOUR["placeholders"]["host"])
    assert dialog.locator("input[name=schema]").count() == 0, "Schema is a hidden field"

    dialog.locator("input[name=connection_id]").fill(CONN_ID)
    host.fill(HOST)
    dialog.locator("input[name=port]").fill(str(scriptrunner.port))
    page.screenshot(path=str(SCREENSHOTS / "scriptrunner-connection-standard-fields.png"))

    # The provider's custom fields, with their labels and descriptions from CONN_FIELDS.
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    for field in CONN_FIELDS.values():
        expect(dialog.locator("label", has_text=field["label"])).to_be_visible()
        expect(dialog.get_by_text(field["description"], exact=True)).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "scriptrunner-connection-form.png"))

    dialog.get_by_role("button", name="Save").click()
    row = page.get_by_role("row").filter(has_text=CONN_ID)
    row.wait_for()

    saved = api.request("GET", f"/api/v2/connections/{CONN_ID}")
    assert (saved["conn_type"], saved["host"], saved["port"]) == ("scriptrunner", HOST, scriptrunner.port)
    extra = json.loads(saved["extra"])
    assert (extra["timeout"], extra["retries"], extra["verify_ssl"]) == (30, 3, True), extra

    # Test: the api-server runs the hook's test_connection against the bundled server.
    test_button = row.get_by_role("button", name="Test Connection")
    with page.expect_response(
        lambda r: r.url.endswith("/api/v2/connections/test") and r.request.method == "POST"
    ) as answer:
        test_button.click()
    result = answer.value.json()
    assert result == {"status": True, "message": f"script-runner at {scriptrunner.url}/healthz is healthy"}
    # The UI shows the result: a green Test icon and the hook's message.
    expect(test_button.locator("svg")).to_have_attribute("color", "green")
    expect(page.get_by_text("Test Connection Successful")).to_be_visible()
    expect(page.get_by_text(result["message"])).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "scriptrunner-connection-tested.png"))
