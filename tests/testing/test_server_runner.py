"""In-process checks of the bundled server's job runner, where HTTP timing would hide a race."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import airflow_provider_scriptrunner.testing
from airflow_provider_scriptrunner.testing.server import (
    SHUTDOWN_GRACE_SEC,
    JobRunner,
    ServerConfig,
    _TailBuffer,
    load_config,
)


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


def test_defaults_are_the_real_servers(tmp_path):
    config = _one_slot_config(tmp_path)  # sets only maxConcurrent

    assert config.default_mode == "sync"
    assert config.kill_grace_sec is None  # no SIGKILL after a cancel or timeout SIGTERM
    assert config.shutdown_grace_sec == SHUTDOWN_GRACE_SEC  # but the server's own shutdown still has one


@pytest.mark.parametrize(("kill_grace_sec", "shutdown_grace_sec"), [(0.5, 0.5), (30, SHUTDOWN_GRACE_SEC)])
def test_kill_grace_sec_shortens_the_shutdown_grace_only(tmp_path, kill_grace_sec, shutdown_grace_sec):
    _one_slot_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"runner": {"killGraceSec": kill_grace_sec}}))

    config = load_config(tmp_path / "config.json", port=0)

    assert (config.kill_grace_sec, config.shutdown_grace_sec) == (kill_grace_sec, shutdown_grace_sec)


@pytest.mark.parametrize("capacity", [0, 1, 7, 100])
def test_tail_buffer_keeps_the_last_bytes_of_everything_fed(capacity):
    chunks = [bytes([n % 256]) * size for n, size in enumerate((1, 5, 300, 2, 0, 40, 420, 3))]
    tail = _TailBuffer(capacity)

    for chunk in chunks:  # shorter and longer than the capacity
        tail.feed(chunk)

    everything = b"".join(chunks)
    assert tail.getvalue() == (everything[-capacity:] if capacity else b"")


def test_the_bundled_server_and_harness_import_nothing_of_the_client():
    # An independent implementation: sharing the client's models or constants would let a client bug
    # and the same server bug agree. Every import counts, at module level or inside a function.
    package = Path(airflow_provider_scriptrunner.testing.__file__).parent
    imported = set()
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add((path.name, node.module))
            elif isinstance(node, ast.Import):
                imported.update((path.name, alias.name) for alias in node.names)
    ours = {(name, module) for name, module in imported if module.startswith("airflow_provider_scriptrunner")}
    assert ours, "the scan found none of the package's own imports: it is not reading the modules"
    outside = {
        (name, module)
        for name, module in ours
        if not module.startswith("airflow_provider_scriptrunner.testing")
    }
    assert outside == set()
