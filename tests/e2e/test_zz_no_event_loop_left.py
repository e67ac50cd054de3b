"""Runs after the browser test: nothing it used may leave an asyncio loop running in this thread."""

import asyncio


def test_no_event_loop_is_left_running():
    asyncio.run(asyncio.sleep(0))
