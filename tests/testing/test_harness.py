"""ScriptRunnerServerProcess and the pytest plugin: servers start, restart, and leave nothing behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from airflow_provider_scriptrunner.testing import (
    ScriptRunnerServerError,
    ScriptRunnerServerProcess,
    process_alive,
    process_group_alive,
)

SCRIPTS = {
    "sleeper": {"body": '#!/bin/sh\necho "pid=$$"\nsleep 30\n', "mode": "async"},
    # Ignores SIGTERM (its children too); gives up after about 30 s.
    "stubborn": {
        "body": '#!/bin/sh\ntrap "" TERM\necho "pid=$$"\ni=0\n'
        "while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n",
        "mode": "async",
    },
    "hello": {"body": "#!/bin/sh\necho hello\n", "mode": "sync"},
}


def start_sleeper(server: ScriptRunnerServerProcess, script_id: str = "sleeper") -> tuple[str, int]:
    """Start a script that prints its pid first; returns its job id and process-group id once it runs."""
    response = requests.post(f"{server.url}/run", json={"scriptId": script_id}, timeout=10)
    assert response.status_code == 202, response.text
    job_id = response.json()["jobId"]
    deadline = time.monotonic() + 10
    while True:
        data = requests.get(f"{server.url}/jobs/{job_id}/logs", timeout=10).json()["data"]
        if match := re.match(r"pid=(\d+)\n", data):
            return job_id, os.getpgid(int(match.group(1)))
        assert time.monotonic() < deadline, "the sleeper did not start"
        time.sleep(0.02)


def running_pgids(server: ScriptRunnerServerProcess) -> set[int]:
    return {int(word) for word in server.running_pgids_path.read_text().split()}


def test_stop_leaves_no_server_and_no_script(tmp_path):
    with ScriptRunnerServerProcess(tmp_path, SCRIPTS) as server:
        server_pid = server.pid
        _, pgid = start_sleeper(server)
        assert running_pgids(server) == {pgid}
        assert process_group_alive(pgid)

    assert server.pid is None
    assert not process_alive(server_pid)
    assert not process_group_alive(pgid)


def test_stop_ends_a_script_that_ignores_sigterm_without_kill_grace_sec(tmp_path):
    # No killGraceSec: cancel sends SIGTERM only, as on the real server. Teardown must still end it.
    with ScriptRunnerServerProcess(tmp_path, SCRIPTS) as server:
        job_id, pgid = start_sleeper(server, "stubborn")
        requests.post(f"{server.url}/jobs/{job_id}/cancel", timeout=10)
        time.sleep(0.5)
        assert requests.get(f"{server.url}/jobs/{job_id}", timeout=10).json()["status"] == "running"
        stopping = time.monotonic()

    assert not process_group_alive(pgid)
    assert time.monotonic() - stopping < server.stop_timeout


def test_running_pgids_lists_only_live_scripts(tmp_path):
    with ScriptRunnerServerProcess(tmp_path, SCRIPTS) as server:
        job_id, _ = start_sleeper(server)
        requests.post(f"{server.url}/jobs/{job_id}/cancel", timeout=10)
        deadline = time.monotonic() + 5
        while requests.get(f"{server.url}/jobs/{job_id}", timeout=10).json()["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)

        assert running_pgids(server) == set()


def test_kill_orphans_the_scripts_until_stop(tmp_path):
    with ScriptRunnerServerProcess(tmp_path, SCRIPTS) as server:
        server_pid = server.pid
        _, pgid = start_sleeper(server)

        server.kill()

        assert not process_alive(server_pid)
        assert process_group_alive(pgid)  # like a real crash: the script goes on, detached
    assert not process_group_alive(pgid)


@pytest.mark.parametrize("script_id", ["sleeper", "stubborn"])
def test_sigterm_makes_the_server_end_its_scripts_without_recording_them(tmp_path, script_id):
    # "stubborn" ignores SIGTERM and no killGraceSec is set: the server's shutdown still SIGKILLs it.
    with ScriptRunnerServerProcess(tmp_path, SCRIPTS) as server:
        job_id, pgid = start_sleeper(server, script_id)
        server_pid = server.pid

        os.kill(server_pid, signal.SIGTERM)  # directly: the harness must not clean up for the server
        deadline = time.monotonic() + 10
        while process_alive(server_pid):
            assert time.monotonic() < deadline, "the server ignored SIGTERM"
            time.sleep(0.02)

        assert not process_group_alive(pgid)
        assert running_pgids(server) == set()
        stored = json.loads((server.state_dir / "jobs.json").read_text())["jobs"]
        assert [job["status"] for job in stored if job["jobId"] == job_id] == ["running"]  # as after a crash


def test_exception_in_the_with_body_still_stops_everything(tmp_path):
    server = ScriptRunnerServerProcess(tmp_path, SCRIPTS)

    with pytest.raises(RuntimeError, match="boom"), server:  # noqa: PT012 - the raise must come from inside the with
        server_pid = server.pid
        _, pgid = start_sleeper(server)
        raise RuntimeError("boom")

    assert not process_alive(server_pid)
    assert not process_group_alive(pgid)


@pytest.mark.parametrize("crash", [False, True], ids=["graceful", "crash"])
def test_restart_comes_back_on_the_same_port(tmp_path, crash):
    with ScriptRunnerServerProcess(tmp_path, SCRIPTS) as server:
        first_pid, port = server.pid, server.port

        server.restart(kill=crash)

        assert server.port == port
        assert server.pid != first_pid
        assert requests.get(f"{server.url}/healthz", timeout=10).json() == {"ok": True}


def test_failed_start_reports_the_server_stderr(tmp_path):
    scripts = {"bad": {"body": "#!/bin/sh\n", "args": {"itemPattern": "("}}}
    server = ScriptRunnerServerProcess(tmp_path, scripts)

    expected = r"(?s)exited with status 2.*invalid 'args.itemPattern'"
    with pytest.raises(ScriptRunnerServerError, match=expected):
        server.start()

    assert server.pid is None


def test_bad_arguments_are_refused_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match="exactly one of scripts or config_path"):
        ScriptRunnerServerProcess(tmp_path)
    with pytest.raises(ValueError, match="unknown runner options"):
        ScriptRunnerServerProcess(tmp_path, SCRIPTS, runner={"max_concurrent": 2})
    with pytest.raises(ValueError, match="exactly one of 'body' or 'path'"):
        ScriptRunnerServerProcess(tmp_path, {"x": {"mode": "sync"}})


def test_generated_files_follow_the_script_runner_formats(tmp_path):
    server = ScriptRunnerServerProcess(
        tmp_path, {"hello": {**SCRIPTS["hello"], "timeoutSec": 5}}, runner={"maxConcurrent": 3}
    )

    config = json.loads(server.config_path.read_text())
    scripts = json.loads((tmp_path / config["scriptsFile"]).read_text())
    assert config["server"] == {"host": "127.0.0.1", "port": 0}
    assert config["runner"]["maxConcurrent"] == 3
    assert scripts == {
        "scripts": [
            {"id": "hello", "path": str(tmp_path / "scripts" / "hello.sh"), "mode": "sync", "timeoutSec": 5}
        ]
    }
    assert os.access(tmp_path / "scripts" / "hello.sh", os.X_OK)
    assert server.state_dir == tmp_path / "state"


def test_server_module_reads_config_file_from_the_environment(tmp_path):
    config_path = ScriptRunnerServerProcess(tmp_path, SCRIPTS).config_path  # writes files, starts nothing
    env = {**os.environ, "CONFIG_FILE": str(config_path)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[2]), env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_scriptrunner.testing.server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        line = process.stdout.readline().decode()  # type: ignore[union-attr]
        match = re.fullmatch(r"script-runner listening on http://127\.0\.0\.1:(\d+)\n", line)
        assert match, line
        url = f"http://127.0.0.1:{match.group(1)}"
        job = requests.post(f"{url}/run", json={"scriptId": "hello"}, timeout=10).json()
        assert job["stdoutPreview"] == "hello\n"
    finally:
        process.terminate()
        assert process.wait(10) == 0  # SIGTERM is a clean shutdown
        process.stdout.close()  # type: ignore[union-attr]


# ---- the pytest plugin --------------------------------------------------------------------------


def test_plugin_connection_points_airflow_at_the_server(scriptrunner_connection):
    from airflow.models.connection import Connection

    conn = Connection.get_connection_from_secrets("scriptrunner_default")

    assert (conn.conn_type, conn.host, conn.port, conn.schema) == (
        "scriptrunner",
        "127.0.0.1",
        scriptrunner_connection.port,
        "http",
    )
    url = f"{conn.schema}://{conn.host}:{conn.port}"
    echo = {"scriptId": "echo", "args": ["hi", "there"], "mode": "sync"}
    job = requests.post(f"{url}/run", json=echo, timeout=10)
    assert job.json()["stdoutPreview"] == "hi there\n"
    exit_3 = {"scriptId": "exit", "args": ["3"], "mode": "sync"}
    failed = requests.post(f"{url}/run", json=exit_3, timeout=10)
    assert (failed.json()["status"], failed.json()["code"]) == ("failed", 3)


class TestPluginOverrides:
    @pytest.fixture
    def scriptrunner_scripts(self):
        return {"mine": {"body": "#!/bin/sh\necho mine\n"}}

    @pytest.fixture
    def scriptrunner_server_config(self):
        return {"defaultMode": "async"}  # the server's default is "sync"

    def test_authors_fixtures_configure_the_server(self, scriptrunner_server):
        url = scriptrunner_server.url
        mine = requests.post(f"{url}/run", json={"scriptId": "mine"}, timeout=10)
        default_script = requests.post(f"{url}/run", json={"scriptId": "echo"}, timeout=10)

        assert mine.status_code == 202  # defaultMode "async" from scriptrunner_server_config
        job_id = mine.json()["jobId"]
        deadline = time.monotonic() + 10
        while (job := requests.get(f"{url}/jobs/{job_id}", timeout=10).json())["status"] != "succeeded":
            assert time.monotonic() < deadline, job
            time.sleep(0.02)
        assert (job["mode"], job["stdoutPreview"]) == ("async", "mine\n")
        assert default_script.json()["error"]["code"] == "SCRIPT_NOT_FOUND"


def test_plugin_default_scripts_are_async(scriptrunner_server):
    # They were written for a server whose default mode was async; they say so now.
    body = {"scriptId": "echo", "args": ["hi"]}

    response = requests.post(f"{scriptrunner_server.url}/run", json=body, timeout=10)

    assert response.status_code == 202


def test_server_exits_when_the_test_process_dies_without_teardown(tmp_path):
    """A test run killed with SIGKILL runs no teardown: the server must still go away, scripts too."""
    import textwrap

    child = textwrap.dedent(
        f"""
        import time, requests
        from airflow_provider_scriptrunner.testing import ScriptRunnerServerProcess
        server = ScriptRunnerServerProcess({str(tmp_path / "srv")!r}, {{"sleep": {{"body": "#!/bin/sh\\nsleep 60\\n"}}}}).start()
        requests.post(server.url + "/run", json={{"scriptId": "sleep", "mode": "async"}}, timeout=10)
        print(server.pid, flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        server_pid = int(proc.stdout.readline())
        pgids_file = tmp_path / "srv" / "state" / "running.pgids"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (pgids_file.exists() and pgids_file.read_text().strip()):
            time.sleep(0.05)
        script_pgids = [int(p) for p in pgids_file.read_text().split()]
        assert script_pgids and process_alive(server_pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (
            process_alive(server_pid) or any(map(process_group_alive, script_pgids))
        ):
            time.sleep(0.1)
        assert not process_alive(server_pid)
        assert not any(map(process_group_alive, script_pgids))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
