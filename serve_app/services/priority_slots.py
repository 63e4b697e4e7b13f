"""PrioritySlots: a semaphore whose waiters are let in by priority, not arrival."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import AsyncIterator


class PrioritySlots:
    """At most `size` holders at once; waiters are let in lowest (priority, order) first."""

    def __init__(self, size: int) -> None:
        self._free = max(1, size)
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []

    @contextlib.asynccontextmanager
    async def hold(self, priority: int, order: int) -> AsyncIterator[None]:
        """Wait for a slot (a lower priority number first, then a lower order), hold it for the block."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
        else:
            ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, order, ticket))
            try:
                await ticket
            except asyncio.CancelledError:
                # A cancelled waiter's ticket stays in the heap, done; `_release` skips it.
                if ticket.done() and not ticket.cancelled():
                    self._release()  # handed a slot in the same instant
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, ticket = heapq.heappop(self._waiting)
            if not ticket.done():
                ticket.set_result(None)
                return
        self._free += 1
