"""One-off blocking work (loading a model) on a thread of its own, which ends when the work does.

PyTorch's OpenMP keeps a team of worker threads for every thread that ran a parallel operation, for as
long as that thread lives. ``asyncio.to_thread`` runs work on the event loop's executor, whose threads
live on: a model loaded there leaves a team of idle workers behind. With more OpenMP workers than
cores, libgomp makes every waiting worker spin only briefly before it sleeps, so the decoding thread's
workers sleep and are woken at each of a step's parallel operations. On this project's 2-core machine a
batch-8 decoding step on two threads took 45.2 ms with one such team alive in another thread, against
32.5 ms without it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["run_in_own_thread"]

T = TypeVar("T")


async def run_in_own_thread(work: Callable[[], T], name: str) -> T:
    """``work()``'s result (or exception), computed on a new thread that ends with it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():  # the awaiting task was cancelled
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = work()
        except BaseException as exc:  # handed to the awaiting task
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await done
