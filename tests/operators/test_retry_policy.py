"""RetryOnExitCodes (Airflow 3.3+ retry policies): which failures it retries, fails, or leaves to Airflow."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

retry_policy = pytest.importorskip(
    "airflow.sdk.definitions.retry_policy", reason="retry policies are Airflow 3.3+"
)

from airflow_provider_scriptrunner.client.errors import (  # noqa: E402
    ScriptRunnerConnectionError,
    ScriptRunnerJobError,
)
from airflow_provider_scriptrunner.client.models import JobStatus, ScriptRunnerJob  # noqa: E402
from airflow_provider_scriptrunner.operators.retry_policy import RetryOnExitCodes  # noqa: E402

RETRY, FAIL, DEFAULT = (
    retry_policy.RetryAction.RETRY,
    retry_policy.RetryAction.FAIL,
    retry_policy.RetryAction.DEFAULT,
)


def failed(status: JobStatus, code: int | None) -> ScriptRunnerJobError:
    return ScriptRunnerJobError("the job failed", ScriptRunnerJob("job_1", status=status, exit_code=code))


@pytest.mark.parametrize(
    ("exception", "action", "reason"),
    [
        (failed(JobStatus.FAILED, 75), RETRY, "exit code 75 is one to retry ([75, 76])"),
        (failed(JobStatus.FAILED, 76), RETRY, "exit code 76 is one to retry ([75, 76])"),
        (failed(JobStatus.FAILED, 1), FAIL, "exit code 1 is not one to retry ([75, 76]): no retries"),
        # Not the script's own exit: Airflow's usual retries.
        (failed(JobStatus.FAILED, -1), DEFAULT, None),  # killed by a signal, or lost in a server restart
        (failed(JobStatus.TIMED_OUT, -1), DEFAULT, None),
        (failed(JobStatus.CANCELED, -1), DEFAULT, None),
        (ScriptRunnerJobError("job job_1 did not finish within timeout=5 s"), DEFAULT, None),
        (
            ScriptRunnerConnectionError("http://h/run", "refused", may_have_reached_server=False),
            DEFAULT,
            None,
        ),
        (RuntimeError("anything else"), DEFAULT, None),
    ],
)
def test_only_the_scripts_own_exit_is_judged(exception, action, reason):
    decision = RetryOnExitCodes([76, 75], retry_delay=30).evaluate(exception, try_number=1, max_tries=3)
    assert (decision.action, decision.reason) == (action, reason)
    assert decision.retry_delay == (timedelta(seconds=30) if action is RETRY else None)


def test_serialize_round_trips_through_json():
    policy = RetryOnExitCodes([75], retry_delay=timedelta(minutes=2))
    data = json.loads(json.dumps(policy.serialize()))
    assert data == {"exit_codes": [75], "retry_delay": 120.0}
    again = RetryOnExitCodes.deserialize(data)
    assert (again.exit_codes, again.retry_delay) == (frozenset({75}), timedelta(minutes=2))


@pytest.mark.parametrize(
    ("exit_codes", "retry_delay", "error", "match"),
    [
        (75, None, TypeError, "exit_codes must be a list of ints, got 75"),
        ("75", None, TypeError, "exit_codes must be a list of ints, got '75'"),
        (["75"], None, TypeError, r"exit_codes\[\] must be an int >= 0, got str"),
        ([-1], None, ValueError, r"exit_codes\[\] must be an int >= 0, got -1"),
        ([75], -5, ValueError, "retry_delay must be a positive number of seconds"),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(exit_codes, retry_delay, error, match):
    with pytest.raises(error, match=match):
        RetryOnExitCodes(exit_codes, retry_delay)
