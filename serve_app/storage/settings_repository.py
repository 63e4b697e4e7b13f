"""PgSettingsStore: the SettingsStore port in Postgres (SQL in sql/settings.sql), one JSON value per key."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, LiteralString

import asyncpg

from serve_app.storage.queries import load


@dataclasses.dataclass(frozen=True, slots=True)
class SettingsQueries:
    """One attribute per `-- name:` block of sql/settings.sql."""

    all_settings: LiteralString
    upsert_settings: LiteralString


Q = load(SettingsQueries, "sql/settings.sql")


class PgSettingsStore:
    """Server settings shared by every replica; each method is one statement."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get_all(self) -> dict[str, Any]:
        return {row["key"]: row["value"] for row in await self._pool.fetch(Q.all_settings)}

    async def set_many(self, values: Mapping[str, Any]) -> None:
        if values:
            await self._pool.execute(Q.upsert_settings, dict(values))
