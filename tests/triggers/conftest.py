"""Fixtures shared by the trigger tests: a fake wall clock and asyncio.sleep for the trigger module."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from airflow_provider_scriptrunner.triggers import scriptrunner as trigger_module

_real_sleep = asyncio.sleep


class FakeClock:
    """Wall clock and asyncio.sleep for the trigger module: sleeping records the delay and advances time."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        if len(self.sleeps) >= 100:  # a trigger that never ends fails fast instead of spinning
            raise AssertionError(f"the trigger kept polling: pauses so far {self.sleeps[:10]}...")
        self.sleeps.append(delay)
        self.now += delay
        await _real_sleep(0)


class _AsyncioWithSleep:
    """The asyncio module as the trigger module sees it, with ``sleep`` replaced."""

    def __init__(self, sleep) -> None:
        self.sleep = sleep

    def __getattr__(self, name: str):
        return getattr(asyncio, name)


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(trigger_module, "asyncio", _AsyncioWithSleep(fake.sleep))
    monkeypatch.setattr(trigger_module, "time", SimpleNamespace(time=fake.time))
    return fake
