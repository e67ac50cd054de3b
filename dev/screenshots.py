"""
`make screenshots`: retake the README's screenshots in headless Chromium. Explicit only: the test
suite never runs it (the UI test, tests/e2e/test_ui_browser.py, writes its own to test-output/).

It starts what `make airflow` starts (dev/airflow_ui.py), plus the DAGs in dev/dags/ as a second
DAG bundle, signs in to the UI and writes

- docs/images/connection-form.png: Admin -> Connections -> Add Connection, type Script Runner,
  with the provider's labels and placeholders;
- docs/images/deferred-task-log.png: the log of a deferred run-script task
  (dev/dags/scriptrunner_live_output.py) while it is still DEFERRED, with its script's output
  (``[stdout] ...`` lines, logged by the trigger) in it.

The second one waits for a ``[stdout]`` line while the task is deferred; when none appears in time
it writes what the page showed to test-output/screenshots/ instead, says so, and exits with 1
(docs/images/ keeps its previous picture).

Needs Chromium at /usr/bin/chromium (Debian: apt-get install chromium) and Playwright (the test
extra); Playwright drives that Chromium, no `playwright install`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any
from urllib.parse import quote

from airflow_ui import ADMIN_USER, ROOT, DeploymentError, LocalAirflow, stop_on_signals

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IMAGES = ROOT / "docs" / "images"
DIAGNOSTICS = ROOT / "test-output" / "screenshots"
CONNECTION_PNG = IMAGES / "connection-form.png"
TASK_LOG_PNG = IMAGES / "deferred-task-log.png"
DEV_DAGS = ROOT / "dev" / "dags"
VIEWPORT: Any = {"width": 1400, "height": 900}  # playwright's ViewportSize
LIVE_DAG, LIVE_TASK = "scriptrunner_live_output", "sleepy_deferred"
#: What a line of script output looks like in a task log (the worker's and the trigger's alike).
OUTPUT_MARK = "[stdout]"


class ScreenshotError(RuntimeError):
    """A screenshot could not show what it should."""


def sign_in(page: Any, local: LocalAirflow) -> None:
    """The simple auth manager's login page, which the UI sends an anonymous visitor to."""
    assert local.deployment is not None
    page.goto(f"{local.deployment.api_url}/connections")
    page.locator("input[name=username]").fill(ADMIN_USER)
    page.locator("input[name=password]").fill(local.deployment.admin_password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/connections")


def shoot_connection_form(page: Any) -> None:
    """Admin -> Connections -> Add Connection, type Script Runner: the relabelled standard fields.

    The fields are left empty so that their placeholders (the provider's examples) show. The form
    opens one section at a time; the Extra Fields section shows as a closed heading.
    """
    from airflow_provider_scriptrunner.client.conn_fields import UI_FIELD_BEHAVIOUR

    page.set_viewport_size({"width": 1400, "height": 1300})  # the whole dialog, unscrolled
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox").fill("Script Runner")
    page.get_by_role("option", name="Script Runner", exact=True).click()
    dialog.locator("input[name=connection_id]").fill("scriptrunner_default")
    dialog.locator("label", has_text=UI_FIELD_BEHAVIOUR["relabeling"]["host"]).wait_for()
    page.mouse.move(0, 0)  # no hover highlight in the picture
    dialog.screenshot(path=str(CONNECTION_PNG))
    print(f"wrote {CONNECTION_PNG.relative_to(ROOT)}", flush=True)
    page.keyboard.press("Escape")
    page.set_viewport_size(VIEWPORT)


def shoot_deferred_task_log(page: Any, local: LocalAirflow, wait: float) -> None:
    """Trigger the live-output DAG and take its task's log page while the task is DEFERRED."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    assert local.api is not None and local.deployment is not None
    api = local.api
    run_id = api.trigger(LIVE_DAG)
    api.wait_state(LIVE_DAG, run_id, LIVE_TASK, "deferred", timeout=120)
    deferred_at = time.monotonic()
    url = f"{local.deployment.api_url}/dags/{LIVE_DAG}/runs/{quote(run_id, safe='')}/tasks/{LIVE_TASK}"
    page.goto(url)
    output = page.get_by_text(OUTPUT_MARK, exact=False)
    state = "deferred"
    while True:
        try:
            output.first.wait_for(timeout=5_000)
            break
        except PlaywrightTimeout:
            pass
        state = api.task_instance(LIVE_DAG, run_id, LIVE_TASK)["state"]
        waited = time.monotonic() - deferred_at
        if state != "deferred" or waited > wait:
            _keep_diagnostics(page, api, run_id, state)
            raise ScreenshotError(
                f"no {OUTPUT_MARK!r} line in the log of {LIVE_DAG}.{LIVE_TASK} in the {waited:.0f} s it was "
                f"deferred (task now {state!r}): the trigger wrote none of the script's output to the task "
                f"log. What the page showed is in {DIAGNOSTICS.relative_to(ROOT)}/"
            )
        page.reload()  # the log view may not refetch on its own
    time.sleep(2)  # let the log view settle (scrolling, a few more lines)
    page.mouse.move(0, 0)
    DIAGNOSTICS.mkdir(parents=True, exist_ok=True)
    taken = DIAGNOSTICS / TASK_LOG_PNG.name
    page.screenshot(path=str(taken))
    state = api.task_instance(LIVE_DAG, run_id, LIVE_TASK)["state"]
    if state != "deferred":
        raise ScreenshotError(
            f"the task was {state!r}, not deferred, by the time the screenshot was taken ({taken}); run it again"
        )
    taken.replace(TASK_LOG_PNG)  # only a picture of a task that was still deferred goes to docs/
    print(
        f"wrote {TASK_LOG_PNG.relative_to(ROOT)} (task still deferred, script output in the log)", flush=True
    )


def _keep_diagnostics(page: Any, api: Any, run_id: str, state: str) -> None:
    DIAGNOSTICS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DIAGNOSTICS / "deferred-task-log-without-output.png"))
    log = api.task_log(LIVE_DAG, run_id, LIVE_TASK, 1)
    (DIAGNOSTICS / "deferred-task-log.txt").write_text(log, encoding="utf-8")
    print(
        f"task {state}; its log as the REST API gives it (end):\n{log[-2000:]}", file=sys.stderr, flush=True
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--wait", type=float, default=30, help="seconds to wait for script output in the deferred task's log"
    )
    options = parser.parse_args(argv)
    if not os.access(CHROMIUM, os.X_OK):
        print(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    stop_on_signals()
    IMAGES.mkdir(parents=True, exist_ok=True)
    local = LocalAirflow("screenshots", extra_bundles={"dev-dags": DEV_DAGS})
    print("Starting script-runner and Airflow...", flush=True)
    failure: str | None = None
    try:
        with local, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport=VIEWPORT)
                context.set_default_timeout(30_000)
                page = context.new_page()
                sign_in(page, local)
                shoot_connection_form(page)
                try:
                    shoot_deferred_task_log(page, local, options.wait)
                except ScreenshotError as err:
                    failure = str(err)
            finally:
                browser.close()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        local.report_stop()
        return 130
    except DeploymentError as err:
        failure = str(err)
    if local.report_stop() != 0:
        return 1
    if failure:
        print(f"FAILED: {failure}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
