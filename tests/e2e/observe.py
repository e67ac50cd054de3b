"""
The script-runner's side of an end-to-end test, shared by tests/e2e and tests/e2e_distributed:
the ``work`` script the test DAGs call, what it records about its runs, and the jobs as the
server reports them.

The ``work`` script records each run in a pid file, ``<marks>/<tag>.runs`` (one line with its
pid per run), and when it starts while an earlier run for the same tag is still alive, it
writes ``<its pid> <the live one's pid>`` to ``<marks>/<tag>.overlaps``: two copies at once.
Its first run for a tag works ``FIRST_SECONDS`` and exits ``FIRST_EXIT``; later runs work
``LATER_SECONDS`` and exit ``LATER_EXIT`` (default 0). With ``LINES`` > 0 it also writes
``line K of LINES of TAG`` to stdout, one a second from its start (the rest at its end), and
one line to stderr.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from airflow_provider_scriptrunner.testing.harness import ScriptRunnerServerProcess, process_alive
from tests.e2e.deployment import wait_for

WORK_SCRIPT = """#!/bin/sh
# usage: work TAG FIRST_SECONDS FIRST_EXIT LATER_SECONDS [LINES [LATER_EXIT]]
tag="$1"; marks="{marks}"; lines="${{5:-0}}"
touch "$marks/$tag.runs"
for pid in $(cat "$marks/$tag.runs"); do
    state=$(sed 's/.*) \\(.\\).*/\\1/' "/proc/$pid/stat" 2>/dev/null)
    case "$state" in ""|Z|X) ;; *) echo "$$ $pid" >> "$marks/$tag.overlaps" ;; esac
done
echo $$ >> "$marks/$tag.runs"
n=$(wc -l < "$marks/$tag.runs")
if [ "$n" -eq 1 ]; then secs="${{2:-0}}"; code="${{3:-0}}"; else secs="${{4:-0}}"; code="${{6:-0}}"; fi
echo "run $n of $tag (pid $$): working $secs s, then exit $code"
if [ "$lines" -gt 0 ]; then echo "run $n of $tag: a line on stderr" >&2; fi
i=0; k=0
while [ "$i" -lt $((secs * 10)) ]; do
    if [ $((i % 10)) -eq 0 ] && [ "$k" -lt "$lines" ]; then k=$((k + 1)); echo "line $k of $lines of $tag"; fi
    sleep 0.1; i=$((i + 1))
done
while [ "$k" -lt "$lines" ]; do k=$((k + 1)); echo "line $k of $lines of $tag"; done
echo "run $n of $tag done"
exit "$code"
"""


@dataclass
class Marks:
    """What the ``work`` script wrote about its runs."""

    directory: Path

    def new_tag(self, prefix: str) -> str:
        return f"{prefix}-{secrets.token_hex(3)}"

    def runs(self, tag: str) -> list[int]:
        try:
            return [int(line) for line in (self.directory / f"{tag}.runs").read_text().split()]
        except FileNotFoundError:
            return []

    def wait_runs(self, tag: str, count: int, timeout: float = 60) -> list[int]:
        """Pids of the script's runs, once it has started at least ``count`` times."""
        return wait_for(
            f"run #{count} of the work script for {tag}",
            lambda: len(self.runs(tag)) >= count and self.runs(tag),
            timeout,
        )

    def live(self, tag: str) -> list[int]:
        """Runs of the script for ``tag`` that are alive now."""
        return [pid for pid in self.runs(tag) if process_alive(pid)]

    def overlaps(self, tag: str) -> list[tuple[int, int]]:
        """``(new pid, live pid)`` for every run that started while an earlier one was alive."""
        try:
            text = (self.directory / f"{tag}.overlaps").read_text()
        except FileNotFoundError:
            return []
        return [
            (int(new), int(old)) for new, old in (line.split() for line in text.splitlines() if line.strip())
        ]

    def all_pids(self) -> list[int]:
        return [int(word) for path in self.directory.glob("*.runs") for word in path.read_text().split()]


@dataclass
class LiveSampler:
    """
    Samples the live runs of the ``work`` script for some tags, in a thread, until stopped:
    ``max_live`` is the most runs of one tag seen alive at one moment (the script's own
    ``overlaps`` record covers the moments between two samples).
    """

    marks: Marks
    tags: Collection[str]
    interval: float = 0.05
    max_live: dict[str, int] = field(default_factory=dict)
    #: ``(monotonic time, tag, live pids)`` of every sample that saw more than one run alive.
    crowded: list[tuple[float, str, list[int]]] = field(default_factory=list)
    samples: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for tag in self.tags:
                live = self.marks.live(tag)
                self.max_live[tag] = max(self.max_live.get(tag, 0), len(live))
                if len(live) > 1:
                    self.crowded.append((time.monotonic(), tag, live))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> LiveSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)


class ScriptRunnerView:
    """The script-runner's side of a test: jobs as the server reports them."""

    def __init__(self, server: ScriptRunnerServerProcess) -> None:
        self.server = server

    def job(self, job_id: str) -> dict[str, Any]:
        response = requests.get(f"{self.server.url}/jobs/{job_id}", timeout=10)
        response.raise_for_status()
        return response.json()

    def wait_job(self, job_id: str, statuses: Collection[str], timeout: float = 30) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def probe() -> dict[str, Any] | None:
            last.update(self.job(job_id))
            return dict(last) if last["status"] in statuses else None

        return wait_for(
            f"job {job_id} to be {sorted(statuses)}", probe, timeout, on_timeout=lambda: f"last: {last}"
        )

    def cancel(self, job_id: str) -> dict[str, Any]:
        response = requests.post(f"{self.server.url}/jobs/{job_id}/cancel", timeout=10)
        response.raise_for_status()
        return response.json()
