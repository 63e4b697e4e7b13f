"""batches(): a stream's items grouped by what was ready together, in order, with errors and closing passed on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import pytest

from serve_app.serving.batching import batches

pytestmark = pytest.mark.timeout(10)


async def test_a_burst_goes_out_as_one_batch_and_later_items_as_the_next() -> None:
    gate = asyncio.Event()

    async def source() -> AsyncGenerator[int, None]:
        for item in (1, 2, 3):  # a burst: produced without waiting
            yield item
        await gate.wait()
        yield 4
        yield 5

    stream = batches(source())
    assert await anext(stream) == [1, 2, 3]
    gate.set()
    assert [item async for batch in stream for item in batch] == [4, 5]


async def test_an_error_comes_after_the_items_before_it() -> None:
    async def source() -> AsyncGenerator[int, None]:
        yield 1
        raise ValueError("broken")

    stream = batches(source())
    assert await anext(stream) == [1]
    with pytest.raises(ValueError, match="broken"):
        await anext(stream)


async def test_closing_the_batches_closes_the_source() -> None:
    closed = asyncio.Event()
    waiting = asyncio.Event()

    async def source() -> AsyncGenerator[int, None]:
        try:
            yield 1
            waiting.set()
            await asyncio.Event().wait()  # a job that would run on
            yield 2
        finally:
            closed.set()

    stream = batches(source())
    assert await anext(stream) == [1]
    await waiting.wait()
    await stream.aclose()
    assert closed.is_set()


async def test_cancelling_the_consumer_closes_the_source() -> None:
    closed = asyncio.Event()
    started = asyncio.Event()

    async def source() -> AsyncGenerator[int, None]:
        try:
            started.set()
            await asyncio.Event().wait()
            yield 1
        finally:
            closed.set()

    async def consume() -> None:
        async with contextlib.aclosing(batches(source())) as stream:
            async for _ in stream:
                pass

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed.is_set()
