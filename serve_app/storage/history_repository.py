"""PgInvocationHistory: the InvocationHistory port (Enfugue's `/api/invocation-history`) over the jobs table.

There is no history table: an Enfugue invocation is a job with origin "enfugue", its request keeps the Enfugue
parameters under "enfugue" (services/jobs.py), and its images are rows of `images`. The SQL is in
sql/invocation_history.sql; the caller's query language is compiled by rest_query_sql.
"""

from __future__ import annotations

import dataclasses
from typing import LiteralString

import asyncpg

from serve_app.domain.ports import HistoryEntry
from serve_app.domain.rest_query import RestQuery
from serve_app.storage.queries import load
from serve_app.storage.rest_query_sql import Column, ColumnKind, fetch_page


@dataclasses.dataclass(frozen=True, slots=True)
class HistoryQueries:
    """One attribute per `-- name:` block of sql/invocation_history.sql."""

    history_source: LiteralString


Q = load(HistoryQueries, "sql/invocation_history.sql")

# The API columns over `(history_source) AS q` (DiffusionInvocation, enfugue-api.md §8).
HISTORY_COLUMNS = {
    "id": Column("q.id"),
    "user_id": Column("q.user_id"),
    "started": Column("q.started", ColumnKind.TIMESTAMP),
    "plan": Column("q.plan", ColumnKind.JSON),
    "duration": Column("q.duration", ColumnKind.NUMBER),
    "outputs": Column("q.outputs", ColumnKind.INTEGER),
    "error": Column("q.error"),
}


class PgInvocationHistory:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def query(self, owner: str, query: RestQuery) -> tuple[list[HistoryEntry], int]:
        rows, count = await fetch_page(
            self._pool, Q.history_source, (owner,), query, HISTORY_COLUMNS, tiebreak="q.item_id"
        )
        return [HistoryEntry.model_validate(dict(row)) for row in rows], count
