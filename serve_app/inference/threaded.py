"""Run blocking diffusion work on the replica's one worker thread and stream its events to the event loop.

Both executors need the same bridge: events cross to the loop through a queue, the loop stays free to
hear cancels, and when the consumer goes away the stop flag is set so the work ends at its next step.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

_E = TypeVar("_E")
_R = TypeVar("_R")

_DONE = object()

Emit = Callable[[_E], None]
StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class Finished(Generic[_R]):
    """The last item of the stream: what the work returned."""

    value: _R


async def run_on_thread(
    thread: Executor, work: Callable[[Callable[[_E], None], StopCheck], _R]
) -> AsyncGenerator[_E | Finished[_R], None]:
    """Yield what `work(emit, should_stop)` emits, then Finished(its return value); its exception propagates."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[object] = asyncio.Queue()
    stop = threading.Event()

    def emit(event: _E) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    def run() -> _R:
        try:
            return work(emit, stop.is_set)
        finally:
            loop.call_soon_threadsafe(events.put_nowait, _DONE)

    future = loop.run_in_executor(thread, run)
    # After a cancel nobody awaits the future; retrieve its exception (JobCanceled) so asyncio stays quiet.
    future.add_done_callback(lambda done: done.cancelled() or done.exception())
    try:
        while (event := await events.get()) is not _DONE:
            yield event  # type: ignore[misc]
        result = await future
    except (asyncio.CancelledError, GeneratorExit):
        # The consumer went away (cancel, or its replica stopped): stop at the next step.
        stop.set()
        raise
    yield Finished(result)
