"""The trigger ending its task itself (the run operator's ``end_in_triggerer``), and when it does not."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from airflow.triggers.base import TaskSkippedEvent, TaskSuccessEvent, TriggerEvent

from airflow_provider_scriptrunner.task import ownership
from airflow_provider_scriptrunner.task.outcome import EventKind, JobEvent, TriggerEnd
from airflow_provider_scriptrunner.task.ownership import Owner
from airflow_provider_scriptrunner.triggers.scriptrunner import ScriptRunnerJobTrigger
from tests.conftest import job_body
from tests.triggers.test_scriptrunner_trigger import JOB, FakeServer, make_trigger, run_all, state_returning

OUT = "row 1\nrow 2\n"
SUCCEEDED = job_body(
    JOB, "succeeded", stdoutSize=len(OUT), stdoutPreview=OUT, stderrSize=5, stderrPreview="warn\n"
)


class Ends:
    """What the trigger pushed and cleared through the task SDK (the seams in ownership)."""

    def __init__(self, monkeypatch, fail: Exception | None = None) -> None:
        self.pushed: list[tuple[dict, bool]] = []
        self.cleared = 0
        self.fail = fail

        async def push_result(ti, result, *, multiple_outputs):
            if self.fail:
                raise self.fail
            self.pushed.append((result, multiple_outputs))

        async def clear_record(ti, log):
            self.cleared += 1

        monkeypatch.setattr(ownership, "push_result", push_result)
        monkeypatch.setattr(ownership, "clear_record", clear_record)


@pytest.fixture
def ends(monkeypatch):
    return Ends(monkeypatch)


OWN = Owner(1, JOB)


def ending_trigger(body, state="deferred", owner=OWN, **end) -> ScriptRunnerJobTrigger:
    trigger = make_trigger(FakeServer((200, body)), stream_logs=True, end_task=TriggerEnd(**end).to_dict())
    trigger.task_instance = SimpleNamespace(dag_id="d", run_id="r", task_id="run", map_index=-1, try_number=1)
    trigger._task_state = state_returning(state)
    trigger._owner = state_returning(owner)
    return trigger


async def only(trigger) -> TriggerEvent:
    [event] = await run_all(trigger)
    return event


@pytest.mark.asyncio
async def test_a_succeeded_job_ends_the_task_with_the_workers_return_value(conn, clock, ends, task_log):
    event = await only(ending_trigger(SUCCEEDED))
    assert isinstance(event, TaskSuccessEvent)
    [(result, multiple_outputs)] = ends.pushed
    assert (result["job_id"], result["status"], result["exit_code"]) == (JOB, "succeeded", 0)
    assert (result["stdout"], result["stderr"], result["stdout_truncated"]) == (OUT, "warn\n", False)
    assert result["result"] is None and multiple_outputs is False
    assert ends.cleared == 1
    assert task_log.text.count("row 1") == 1  # the output is logged once, by the trigger
    assert "the task ends here, in the triggerer" in task_log.text


@pytest.mark.asyncio
async def test_the_return_value_is_cut_to_max_output_bytes(conn, clock, ends):
    await only(ending_trigger(SUCCEEDED, max_output_bytes=6))
    [(result, _)] = ends.pushed
    assert (result["stdout"], result["stdout_truncated"]) == ("row 2\n", True)


@pytest.mark.asyncio
async def test_multiple_outputs_and_do_xcom_push_are_passed_on(conn, clock, ends):
    await only(ending_trigger(SUCCEEDED, multiple_outputs=True))
    assert ends.pushed[0][1] is True
    ends.pushed.clear()
    event = await only(ending_trigger(SUCCEEDED, push_result=False))
    assert isinstance(event, TaskSuccessEvent) and ends.pushed == [] and ends.cleared == 2


@pytest.mark.asyncio
async def test_a_skip_code_ends_the_task_skipped(conn, clock, ends):
    body = job_body(JOB, "failed", code=3)
    event = await only(ending_trigger(body, skip_on_exit_code=(3,)))
    assert isinstance(event, TaskSkippedEvent)
    assert ends.pushed == [] and ends.cleared == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "end", "state", "owner"),
    [
        (job_body(JOB, "failed", code=4), {}, "deferred", Owner(1, JOB)),
        (
            job_body(JOB, "failed", code=3),
            {"skip_on_exit_code": (3,), "skip": False},
            "deferred",
            Owner(1, JOB),
        ),
        (SUCCEEDED, {}, "failed", Owner(1, JOB)),
        (SUCCEEDED, {}, "deferred", Owner(2, "job_other")),
        (SUCCEEDED, {}, RuntimeError("api down"), Owner(1, JOB)),
    ],
    ids=["failure", "skip-with-callback", "task-not-deferred", "another-try-owns-it", "state-unreadable"],
)
async def test_otherwise_a_worker_ends_the_task(conn, clock, ends, body, end, state, owner):
    event = await only(ending_trigger(body, state=state, owner=owner, **end))
    assert not isinstance(event, (TaskSuccessEvent, TaskSkippedEvent))
    job_event = JobEvent.from_dict(event.payload)
    assert job_event.kind is EventKind.ENDED
    assert ends.pushed == [] and ends.cleared == 0
    # What the trigger logged is not logged again by the worker.
    assert job_event.log_offsets == {"stdout": job_event.job.stdout_size, "stderr": job_event.job.stderr_size}


@pytest.mark.asyncio
async def test_a_failed_push_leaves_the_end_to_a_worker(conn, clock, monkeypatch, task_log):
    failing = Ends(monkeypatch, fail=RuntimeError("xcom rejected"))
    event = await only(ending_trigger(SUCCEEDED))
    assert JobEvent.from_dict(event.payload).kind is EventKind.ENDED
    assert failing.cleared == 0
    assert "Could not end the task in the triggerer (xcom rejected); a worker ends it" in task_log.text


@pytest.mark.asyncio
async def test_without_a_task_instance_a_worker_ends_the_task(conn, clock, ends):
    trigger = make_trigger(FakeServer((200, SUCCEEDED)), end_task=TriggerEnd().to_dict())
    event = await only(trigger)
    assert JobEvent.from_dict(event.payload).kind is EventKind.ENDED and ends.pushed == []


def test_end_task_round_trips_and_needs_the_output_from_its_start():
    end = TriggerEnd(skip_on_exit_code=(3, 4), max_output_bytes=10, push_result=False, multiple_outputs=True)
    trigger = ScriptRunnerJobTrigger(job_id=JOB, end_task=end.to_dict())
    kwargs = json.loads(json.dumps(trigger.serialize()[1]))
    assert ScriptRunnerJobTrigger(**kwargs).end_task == end
    with pytest.raises(ValueError, match="log_offsets must be 0"):
        ScriptRunnerJobTrigger(job_id=JOB, end_task=end.to_dict(), log_offsets={"stdout": 5})
