"""In-process checks of the bundled server's job runner, where HTTP timing would hide a race."""

from __future__ import annotations

from pathlib import Path

from airflow_provider_scriptrunner.testing.server import JobRunner, ScriptSpec, ServerConfig


def _config(tmp_path: Path, max_concurrent: int = 1) -> ServerConfig:
    script = tmp_path / "quick.sh"
    script.write_text("#!/bin/sh\necho done\n")
    script.chmod(0o755)
    return ServerConfig(
        host="127.0.0.1",
        port=0,
        max_concurrent=max_concurrent,
        default_mode="async",
        max_log_bytes_per_stream=1024,
        preview_max_bytes=100,
        job_store_file=tmp_path / "state" / "jobs.json",
        logs_dir=tmp_path / "logs",
        kill_grace_sec=1,
        scripts={"quick": ScriptSpec(id="quick", path=script)},
    )


def test_submit_reports_the_status_at_submission_even_when_the_script_has_already_ended(tmp_path):
    # CI once saw a 202 answer saying "succeeded": the status was read after a quick script ended.
    # The contract allows only "queued" or "running" in the async answer.
    config = _config(tmp_path)
    runner = JobRunner(config)
    try:
        first, first_status = runner.submit(config.scripts["quick"], [], "async")
        second, second_status = runner.submit(config.scripts["quick"], [], "async")
        assert runner.wait(first)["status"] == "succeeded"
        assert runner.wait(second)["status"] == "succeeded"
    finally:
        runner.shutdown(grace=1)

    assert (first_status, second_status) == ("running", "queued")  # maxConcurrent 1: the second waited
