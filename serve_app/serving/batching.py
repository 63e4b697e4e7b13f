"""Batches of a stream's items: whatever the producer made while the consumer was busy, sent as one message.

A graph job reports dozens of events (node started/progress/complete, a load report per model part), often in
bursts microseconds apart. Each item of a Ray streaming response costs a serialization and a report to the
caller, so the Diffusion replica sends the burst as one list instead of one message per event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import TypeVar

_T = TypeVar("_T")


class _End:
    pass


async def batches(source: AsyncGenerator[_T, None]) -> AsyncGenerator[list[_T], None]:
    """The items of `source` in order, grouped: each list holds what was ready when the consumer asked (at least
    one item). An exception of `source` is raised after the items before it. Closing this generator closes
    `source` (a running job sees its consumer leave, as it would without batching)."""
    ready: asyncio.Queue[_T | _End | BaseException] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in source:
                ready.put_nowait(item)
        except Exception as error:  # handed to the consumer, in order
            ready.put_nowait(error)
        ready.put_nowait(_End())

    task = asyncio.create_task(pump(), name="stream-batches")
    try:
        while True:
            batch: list[_T] = []
            entry = await ready.get()
            while True:
                if isinstance(entry, _End | BaseException):
                    if batch:
                        yield batch
                    if isinstance(entry, BaseException):
                        raise entry
                    return
                batch.append(entry)
                if ready.empty():
                    break
                entry = ready.get_nowait()
            yield batch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await source.aclose()
