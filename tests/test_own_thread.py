"""``run_in_own_thread``: blocking work on a thread that ends with it, off the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from assistant.own_thread import run_in_own_thread


async def test_the_work_runs_on_a_thread_of_its_own_that_ends_with_it() -> None:
    ran_on: list[threading.Thread] = []

    def work() -> int:
        ran_on.append(threading.current_thread())
        return 42

    assert await run_in_own_thread(work, "loader") == 42
    (thread,) = ran_on
    assert thread is not threading.current_thread() and thread.name == "loader"
    thread.join(5)
    assert not thread.is_alive()
    assert thread not in threading.enumerate()


async def test_an_exception_reaches_the_caller() -> None:
    def work() -> None:
        raise OSError("no such model")

    with pytest.raises(OSError, match="no such model"):
        await run_in_own_thread(work, "loader")


async def test_the_event_loop_runs_meanwhile() -> None:
    release = threading.Event()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while not release.is_set():
            ticks += 1
            if ticks == 5:
                release.set()
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    assert await run_in_own_thread(lambda: release.wait(10), "loader")
    await ticking
    assert ticks >= 5


async def test_a_cancelled_caller_leaves_the_work_to_finish_quietly() -> None:
    release, finished = threading.Event(), threading.Event()

    def work() -> None:
        release.wait(10)
        finished.set()

    task = asyncio.create_task(run_in_own_thread(work, "loader"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    assert await asyncio.to_thread(finished.wait, 5)
    await asyncio.sleep(0.05)  # the result is handed to a settled future: nothing is raised
