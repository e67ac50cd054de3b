"""The limits a job is held to: the task deadline arithmetic, idle (stall) detection, and both as JSON."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_scriptrunner.client.models import ScriptRunnerJob
from airflow_provider_scriptrunner.task.limits import Deadline, IdleWatch, next_wake, task_deadline
from tests.conftest import job_body

NOW = 1_800_000_100.0
START = datetime.fromtimestamp(1_800_000_000, tz=timezone.utc)  # the try started 100 s before NOW


def job(status="running", **fields) -> ScriptRunnerJob:
    return ScriptRunnerJob.from_api(job_body("job_1_1", status, **fields))


# -- task_deadline -------------------------------------------------------------------------------


def test_no_limit_no_deadline():
    assert task_deadline(START, None, None, NOW) is None


def test_timeout_counts_from_the_try_start_not_from_now():
    # Time spent before the wait (submitting, reattaching) counts.
    assert task_deadline(START, 300, None, NOW) == Deadline(1_800_000_300.0, "timeout", 300.0)


def test_execution_timeout_counts_from_the_try_start():
    assert task_deadline(START, None, timedelta(seconds=20), NOW) == Deadline(
        1_800_000_020.0, "execution_timeout", 20.0
    )


@pytest.mark.parametrize(
    ("timeout", "execution_timeout", "expected"),
    [
        (30, timedelta(seconds=20), Deadline(1_800_000_020.0, "execution_timeout", 20.0)),
        (10, timedelta(seconds=20), Deadline(1_800_000_010.0, "timeout", 10.0)),
        (20, timedelta(seconds=20), Deadline(1_800_000_020.0, "timeout", 20.0)),  # a tie names timeout
        (timedelta(minutes=1), None, Deadline(1_800_000_060.0, "timeout", 60.0)),
    ],
)
def test_the_earliest_limit_wins_and_is_named(timeout, execution_timeout, expected):
    assert task_deadline(START, timeout, execution_timeout, NOW) == expected


def test_without_a_start_date_now_is_the_start():
    assert task_deadline(None, 5, None, NOW).at == NOW + 5


def test_epoch_start_is_accepted():
    assert task_deadline(1_800_000_000.0, None, 20.0, NOW).at == 1_800_000_020.0


def test_a_deadline_in_the_past_is_kept_as_is():
    # A try that started long ago is already late: the caller cancels at once.
    assert task_deadline(START, 50, None, NOW).at < NOW


def test_describe_names_the_limit_and_its_value():
    assert Deadline(1.0, "execution_timeout", 20.0).describe() == "execution_timeout=20 s"
    assert Deadline(1.0, "timeout", 1.5).describe() == "timeout=1.5 s"


@pytest.mark.parametrize("bad", [0, -1, float("inf"), timedelta(0)])
def test_bad_limits_are_refused_with_their_name(bad):
    with pytest.raises(ValueError, match="execution_timeout must be a positive number of seconds"):
        task_deadline(START, None, bad, NOW)
    with pytest.raises(ValueError, match="idle_timeout must be a positive number of seconds"):
        IdleWatch(bad)


# -- IdleWatch -----------------------------------------------------------------------------------


def test_off_by_default():
    watch = IdleWatch(None)
    assert watch.observe(job(), NOW) is None and watch.observe(job(), NOW + 10**6) is None
    assert watch.due() is None


def test_a_running_job_without_output_growth_stalls():
    watch = IdleWatch(30)
    assert watch.observe(job(stdoutSize=5), NOW) is None
    assert watch.due() == NOW + 30
    assert watch.observe(job(stdoutSize=5), NOW + 29) is None
    assert watch.observe(job(stdoutSize=5), NOW + 30) == "stalled"


@pytest.mark.parametrize("grown", [{"stdoutSize": 6}, {"stderrSize": 1}])
def test_growth_of_either_stream_restarts_the_clock(grown):
    watch = IdleWatch(30)
    watch.observe(job(stdoutSize=5), NOW)
    assert watch.observe(job(**{"stdoutSize": 5, **grown}), NOW + 25) is None
    assert watch.observe(job(**{"stdoutSize": 5, **grown}), NOW + 50) is None
    assert watch.observe(job(**{"stdoutSize": 5, **grown}), NOW + 55) == "stalled"


def test_queued_time_does_not_count():
    watch = IdleWatch(30)
    assert watch.observe(job("queued"), NOW) is None
    assert watch.observe(job("queued"), NOW + 1000) is None
    assert watch.due() is None
    assert watch.observe(job("running"), NOW + 1000) is None  # the clock starts when it runs
    assert watch.observe(job("running"), NOW + 1029) is None
    assert watch.observe(job("running"), NOW + 1030) == "stalled"


def through_json(data: dict) -> dict:
    """``data`` as it crosses the trigger boundary (serialized trigger kwargs are JSON)."""
    return json.loads(json.dumps(data))


def test_idle_state_carried_across_the_trigger_boundary():
    watch = IdleWatch(30)
    watch.observe(job(stdoutSize=5, stderrSize=2), NOW)
    data = through_json(watch.to_dict())
    assert data == {"idle_timeout": 30.0, "sizes": [5, 2], "since": NOW}

    resumed = IdleWatch.from_dict(data)
    assert (resumed.idle_timeout, resumed.sizes, resumed.since) == (30.0, (5, 2), NOW)
    assert resumed.due() == NOW + 30
    # Not restarted by the deferral: the same sizes 30 s after they were first seen are a stall.
    assert resumed.observe(job(stdoutSize=5, stderrSize=2), NOW + 30) == "stalled"
    grown = IdleWatch.from_dict(data)
    assert grown.observe(job(stdoutSize=6, stderrSize=2), NOW + 30) is None  # it grew meanwhile


def test_an_idle_watch_that_saw_nothing_yet_round_trips():
    data = through_json(IdleWatch(12.5).to_dict())
    assert data == {"idle_timeout": 12.5, "sizes": None, "since": None}
    resumed = IdleWatch.from_dict(data)
    assert (resumed.idle_timeout, resumed.sizes, resumed.since) == (12.5, None, None)
    assert resumed.observe(job(stdoutSize=5), NOW) is None  # the clock starts now
    assert resumed.due() == NOW + 12.5


def test_no_idle_dict_is_a_watch_that_is_off():
    watch = IdleWatch.from_dict(None)
    assert watch.idle_timeout is None
    assert (
        watch.observe(job(stdoutSize=5), NOW) is None
        and watch.observe(job(stdoutSize=5), NOW + 10**6) is None
    )


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("idle_timeout=30", "idle must be a dict"),
        ([30, [5, 2], NOW], "idle must be a dict"),
        ({"idle_timeout": 30, "sizes": [5]}, "sizes"),
        ({"idle_timeout": 30, "sizes": "5,2"}, "sizes"),
        ({"idle_timeout": 30, "sizes": ["five", "two"]}, "five"),
        ({"idle_timeout": 30, "sizes": [5, 2], "since": "yesterday"}, "since"),
        ({"idle_timeout": 0}, "idle_timeout must be a positive number"),
        ({"idle_timeout": "30"}, "idle_timeout must be a positive number"),
    ],
    ids=["string", "list", "one-size", "sizes-string", "sizes-not-numbers", "since-string", "zero", "text"],
)
def test_a_bad_idle_dict_is_refused(data, match):
    with pytest.raises(ValueError, match=match):
        IdleWatch.from_dict(data)


# -- Deadline across the trigger boundary -----------------------------------------------------------


def test_a_deadline_round_trips_through_json():
    deadline = task_deadline(START, None, timedelta(seconds=20), NOW)
    data = through_json(deadline.to_dict())
    assert data == {"at": 1_800_000_020.0, "limit": "execution_timeout", "seconds": 20.0}
    assert Deadline.from_dict(data) == Deadline(1_800_000_020.0, "execution_timeout", 20.0)
    assert Deadline.from_dict(data).describe() == "execution_timeout=20 s"


def test_no_deadline_dict_is_no_deadline():
    assert Deadline.from_dict(None) is None


@pytest.mark.parametrize(
    "data",
    [
        "execution_timeout=20 s",  # a formatted string is never parsed back
        [1_800_000_020.0, "timeout", 20.0],
        {"at": 1_800_000_020.0, "seconds": 20.0},
        {"at": 1_800_000_020.0, "limit": "idle_timeout", "seconds": 20.0},
        {"limit": "timeout", "seconds": 20.0},
        {"at": 1_800_000_020.0, "limit": "timeout"},
        {"at": "tomorrow", "limit": "timeout", "seconds": 20.0},
        {"at": float("nan"), "limit": "timeout", "seconds": 20.0},
        {"at": 1_800_000_020.0, "limit": "timeout", "seconds": 0},
        {"at": 1_800_000_020.0, "limit": "timeout", "seconds": "20"},
    ],
    ids=[
        "string",
        "list",
        "no-limit",
        "unknown-limit",
        "no-at",
        "no-seconds",
        "at-text",
        "at-nan",
        "seconds-zero",
        "seconds-text",
    ],
)
def test_a_bad_deadline_dict_is_refused(data):
    with pytest.raises(ValueError, match="deadline"):
        Deadline.from_dict(data)


def test_a_deadline_has_passed_from_its_moment_on():
    deadline = Deadline(NOW, "timeout", 10.0)
    assert deadline.passed(NOW - 0.001) is False
    assert deadline.passed(NOW) is True
    assert deadline.passed(NOW + 1) is True


@pytest.mark.parametrize("truncated", ["stdoutTruncated", "stderrTruncated"])
def test_a_truncated_stream_turns_idle_detection_off_once(truncated):
    watch = IdleWatch(30)
    watch.observe(job(stdoutSize=5), NOW)
    assert watch.observe(job(stdoutSize=5, **{truncated: True}), NOW + 10) == "disabled"
    # Never a false stall afterwards, and only one "disabled" for the warning.
    assert watch.observe(job(stdoutSize=5, **{truncated: True}), NOW + 1000) is None
    assert watch.due() is None
    assert "idle_timeout is off" in watch.disabled_message("job_1_1")


def test_stall_message_says_no_output_for_n_seconds():
    assert "no output for 30 s" in IdleWatch(30).stall_message("job_1_1")


def test_next_wake_stops_at_the_first_due_moment():
    assert next_wake(NOW, 10, None, None) == 10
    assert next_wake(NOW, 10, NOW + 3, None) == 3
    assert next_wake(NOW, 10, NOW + 30, NOW + 4) == 4
    assert next_wake(NOW, 10, NOW - 5) == 0.0
