"""PrioritySlots: a semaphore whose waiters are let in by priority, not arrival."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import AsyncIterator


class PrioritySlots:
    """At most `size` holders at once; waiters are let in lowest (priority, order) first."""

    def __init__(self, size: int) -> None:
        self._size = max(1, size)
        self._free = self._size
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

    @property
    def size(self) -> int:
        """How many may hold a slot at once."""
        return self._size

    def resize(self, size: int) -> None:
        """Allow `size` holders from now on: more lets waiters in at once; fewer lets none in until enough
        holders have left (none is interrupted)."""
        size = max(1, size)
        self._free += size - self._size
        self._size = size
        self._admit()

    def _release(self) -> None:
        self._free += 1
        self._admit()

    def _admit(self) -> None:
        while self._free > 0 and self._waiting:
            _, _, ticket = heapq.heappop(self._waiting)
            if not ticket.done():  # a cancelled waiter's ticket is skipped
                ticket.set_result(None)
                self._free -= 1
