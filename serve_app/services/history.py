"""HistoryService: Enfugue's `/api/invocation-history`, a generic REST listing always scoped to the caller."""

from __future__ import annotations

from serve_app.domain.errors import NotFound
from serve_app.domain.ports import HistoryEntry, InvocationHistory
from serve_app.domain.rest_query import RestQuery


class HistoryService:
    def __init__(self, history: InvocationHistory) -> None:
        self._history = history

    async def query(self, owner: str, query: RestQuery) -> tuple[list[HistoryEntry], int]:
        """`owner`'s invocations that `query` selects, and their count before limit and offset.
        The owner scope is applied by the store, outside anything the query can say."""
        return await self._history.query(owner, query)

    async def get(self, owner: str, invocation_id: str, query: RestQuery) -> tuple[list[HistoryEntry], int]:
        """The scoped GET: as `query`, plus `id = invocation_id`; NotFound when no invocation of `owner` has it
        (another owner's invocation is not found either)."""
        entries, count = await self._history.query(owner, query.where("id", invocation_id))
        if count == 0:
            raise NotFound(f"No DiffusionInvocation found with id={invocation_id}")
        return entries, count
