"""In-process checks of the bundled server's job runner, where HTTP timing would hide a race."""

from __future__ import annotations

import json
from pathlib import Path

from airflow_provider_scriptrunner.testing.server import JobRunner, ServerConfig, load_config


def _one_slot_config(tmp_path: Path) -> ServerConfig:
    """A server config with one script, ``quick``, and room for one running job at a time."""
    script = tmp_path / "quick.sh"
    script.write_text("#!/bin/sh\necho done\n")
    script.chmod(0o755)
    (tmp_path / "scripts.json").write_text(json.dumps({"scripts": [{"id": "quick", "path": "quick.sh"}]}))
    (tmp_path / "config.json").write_text(json.dumps({"runner": {"maxConcurrent": 1}}))
    return load_config(tmp_path / "config.json", port=0)


def test_submit_reports_the_status_at_submission_even_when_the_script_has_already_ended(tmp_path):
    # CI once saw a 202 answer saying "succeeded": the status was read after a quick script ended.
    # The contract allows only "queued" or "running" in the async answer.
    config = _one_slot_config(tmp_path)
    runner = JobRunner(config)
    try:
        first, first_status = runner.submit(config.scripts["quick"], [], "async")
        second, second_status = runner.submit(config.scripts["quick"], [], "async")
        assert runner.wait(first)["status"] == "succeeded"
        assert runner.wait(second)["status"] == "succeeded"
    finally:
        runner.shutdown(grace=1)

    assert (first_status, second_status) == ("running", "queued")  # maxConcurrent 1: the second waited
