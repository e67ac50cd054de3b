"""What a failure means for the task's retries: retry_can_help, a pure function, case by case."""

from __future__ import annotations

import pytest

from airflow_provider_scriptrunner.client.errors import (
    ScriptRunnerApiError,
    ScriptRunnerAuthError,
    ScriptRunnerConfigError,
    ScriptRunnerConnectionError,
    ScriptRunnerJobError,
    ScriptRunnerJobNotFoundError,
    ScriptRunnerResponseError,
    ScriptRunnerTimeoutError,
)
from airflow_provider_scriptrunner.task.outcome import retry_can_help


def api_error(status: int, code: str | None) -> ScriptRunnerApiError:
    return ScriptRunnerApiError(status, code, "m", method="POST", url="http://h/run")


@pytest.mark.parametrize(
    ("err", "job_given", "helps"),
    [
        # Input the provider rejects before sending, and what the server rejects for good.
        (TypeError("args must be a list"), False, False),
        (ValueError("script_id is empty"), False, False),
        (api_error(400, "SCRIPT_NOT_FOUND"), False, False),
        (api_error(400, "INVALID_ARGS"), False, False),
        # A job the task was given that the server does not know never appears later...
        (ScriptRunnerJobNotFoundError(404, "JOB_NOT_FOUND", "m", url="u"), True, False),
        # ...but a task that submitted the job itself can submit again.
        (ScriptRunnerJobNotFoundError(404, "JOB_NOT_FOUND", "m", url="u"), False, True),
        # A connection to fix in Airflow, credentials, a busy or failing server, the network.
        (ScriptRunnerConfigError("the connection has no host"), False, True),
        (ScriptRunnerAuthError(401, None, "rejected", url="u"), True, True),
        (api_error(500, "INTERNAL_ERROR"), False, True),
        (api_error(429, None), False, True),
        (ScriptRunnerResponseError(502, "not JSON", url="u"), True, True),
        (ScriptRunnerConnectionError("u", "refused", may_have_reached_server=False), True, True),
        (ScriptRunnerTimeoutError("u", "slow", may_have_reached_server=True), False, True),
        # A script that exited non-zero may succeed next time.
        (ScriptRunnerJobError("script 'x' failed with exit code 1"), False, True),
        (RuntimeError("anything else"), False, True),
    ],
)
def test_retry_can_help(err, job_given, helps):
    assert retry_can_help(err, job_given=job_given) is helps
