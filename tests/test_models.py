"""The client's models: job status, job (and its streams), log page."""

from __future__ import annotations

import json
import logging

import pytest

from airflow_provider_scriptrunner.client.models import JobStatus, LogPage, ScriptRunnerJob, StreamView
from tests.conftest import job_body


@pytest.mark.parametrize(
    ("raw", "status", "terminal", "success"),
    [
        ("queued", JobStatus.QUEUED, False, False),
        ("running", JobStatus.RUNNING, False, False),
        ("succeeded", JobStatus.SUCCEEDED, True, True),
        ("failed", JobStatus.FAILED, True, False),
        ("timed_out", JobStatus.TIMED_OUT, True, False),
        ("canceled", JobStatus.CANCELED, True, False),
        ("completed", JobStatus.SUCCEEDED, True, True),
        ("cancelled", JobStatus.CANCELED, True, False),
        ("SUCCEEDED", JobStatus.SUCCEEDED, True, True),
    ],
)
def test_status_parse(raw, status, terminal, success):
    parsed = JobStatus.parse(raw)
    assert parsed is status
    assert parsed.is_terminal is terminal
    assert parsed.is_success is success


@pytest.mark.parametrize("raw", ["paused", "", None])
def test_unknown_status_is_kept_non_terminal_with_a_warning(raw, caplog):
    caplog.set_level(logging.WARNING)
    job = ScriptRunnerJob.from_api(job_body(status=raw))
    assert job.status is JobStatus.UNKNOWN and not job.is_terminal and not job.is_success
    assert job.raw_status == raw
    assert "unknown job status" in caplog.text


def test_from_api_reads_every_field():
    body = job_body(
        "job_7_1",
        "failed",
        code=3,
        stdoutSize=10,
        stderrSize=4,
        stdoutTruncated=True,
        stderrPreview="boom\n",
        extraField=1,
    )
    job = ScriptRunnerJob.from_api(body)
    assert (job.job_id, job.script_id, job.mode, job.exit_code) == ("job_7_1", "quick-echo", "async", 3)
    assert (job.stdout_size, job.stderr_size, job.stdout_truncated, job.stderr_truncated) == (
        10,
        4,
        True,
        False,
    )
    assert job.stderr_preview == "boom\n" and job.duration_ms == 990
    assert job.ended_at == "2026-01-01T00:00:01.000Z"
    assert job.extra == {
        "stdoutRef": "job_7_1.stdout.log",
        "stderrRef": "job_7_1.stderr.log",
        "extraField": 1,
    }
    assert not job.was_killed_or_lost


def test_stream_views_of_a_job():
    job = ScriptRunnerJob.from_api(
        job_body(
            stdoutSize=12, stderrSize=5, stderrTruncated=True, stdoutPreview="out\n", stderrPreview="err\n"
        )
    )
    assert job.stream("stdout") == StreamView("stdout", 12, False, "out\n")
    assert job.stream("stderr") == StreamView("stderr", 5, True, "err\n")
    with pytest.raises(ValueError, match="stream must be 'stdout' or 'stderr', got 'both'"):
        job.stream("both")


def test_killed_or_lost():
    assert ScriptRunnerJob.from_api(job_body(status="failed", code=-1)).was_killed_or_lost
    assert not ScriptRunnerJob.from_api(job_body(status="canceled", code=-1)).was_killed_or_lost


def test_to_dict_is_json_and_round_trips():
    job = ScriptRunnerJob.from_api(job_body("j", "timed_out"))
    data = json.loads(json.dumps(job.to_dict()))
    assert data["status"] == "timed_out"
    assert ScriptRunnerJob.from_dict(data) == job


@pytest.mark.parametrize("body", [{}, {"jobId": ""}, {"jobId": 5}, []])
def test_from_api_rejects_a_body_without_job_id(body):
    with pytest.raises(ValueError, match="no jobId"):
        ScriptRunnerJob.from_api(body)


def test_log_page_rejects_missing_fields():
    with pytest.raises(ValueError, match="nextOffset"):
        LogPage.from_api({"jobId": "j", "stream": "stdout", "offset": 0, "totalSize": 0, "data": ""})
