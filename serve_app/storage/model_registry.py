"""The model registry in Postgres (SQL in sql/models.sql): PgModelRegistry (ports.ModelRegistry), PgCacheStats
(ports.CacheStatsStore) and PgModelSettings (small server-wide values such as the Hugging Face token)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any, LiteralString

import asyncpg

from serve_app.domain.errors import Conflict, InvalidRequest, ModelNotFound, NotFound
from serve_app.domain.models import ModelRecord
from serve_app.storage.queries import load


@dataclasses.dataclass(frozen=True, slots=True)
class ModelQueries:
    """One attribute per `-- name:` block of sql/models.sql."""

    insert_models: LiteralString
    insert_missing_models: LiteralString
    find_models: LiteralString
    get_model: LiteralString
    get_models: LiteralString
    lock_model: LiteralString
    model_by_path: LiteralString
    update_model: LiteralString
    delete_model: LiteralString
    related_keys: LiteralString
    take_relationships: LiteralString
    insert_relationship: LiteralString
    delete_relationship: LiteralString
    report_cache_stats: LiteralString
    remove_cache_stats: LiteralString
    live_cache_stats: LiteralString
    get_setting: LiteralString
    set_setting: LiteralString
    delete_setting: LiteralString


Q = load(ModelQueries, "sql/models.sql")

# Database-managed columns: never written from a record.
_MANAGED = frozenset({"created_at", "updated_at"})
_FIELDS = frozenset(ModelRecord.model_fields)


def _record(row: Mapping[str, Any]) -> ModelRecord:
    return ModelRecord.model_validate(dict(row))


def _columns(record: ModelRecord) -> dict[str, Any]:
    """The record as the jsonb object jsonb_populate_record(set) reads (column name -> JSON value)."""
    return record.model_dump(mode="json", exclude=set(_MANAGED))


def _conflict(error: asyncpg.UniqueViolationError, record: ModelRecord) -> Conflict:
    constraint = getattr(error, "constraint_name", None)
    if constraint == "models_path_key":
        return Conflict(f"A model at {record.path} is already installed")
    if constraint == "models_name_base_type_key":
        return Conflict(f"A {record.base} {record.type} model named {record.name!r} already exists")
    return Conflict(f"A model with key {record.key} already exists")


class PgModelRegistry:
    """Registered models and their relationships; every method is one transaction."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def find(
        self,
        *,
        bases: Collection[str] | None = None,
        type: str | None = None,
        name: str | None = None,
        format: str | None = None,
    ) -> list[ModelRecord]:
        """Models matching every given filter (an empty `bases` matches any), by name, base, type."""
        rows = await self._pool.fetch(Q.find_models, list(bases) if bases else None, type, name, format)
        return [_record(row) for row in rows]

    async def get(self, key: str) -> ModelRecord:
        """One model; raise ModelNotFound."""
        row = await self._pool.fetchrow(Q.get_model, key)
        if row is None:
            raise ModelNotFound(key)
        return _record(row)

    async def get_many(self, keys: Collection[str]) -> dict[str, ModelRecord]:
        """The models among `keys` that exist, by key."""
        if not keys:
            return {}
        rows = await self._pool.fetch(Q.get_models, list(keys))
        return {row["key"]: _record(row) for row in rows}

    async def by_path(self, path: str) -> ModelRecord | None:
        """The model registered at this exact path, if any."""
        row = await self._pool.fetchrow(Q.model_by_path, path)
        return None if row is None else _record(row)

    async def add(self, record: ModelRecord) -> ModelRecord:
        """Insert; raise Conflict when the key, the path, or (name, base, type) is taken."""
        try:
            (row,) = await self._pool.fetch(Q.insert_models, [_columns(record)])
        except asyncpg.UniqueViolationError as error:
            raise _conflict(error, record) from None
        return _record(row)

    async def add_missing(self, records: Sequence[ModelRecord]) -> int:
        """Insert those whose key, path and (name, base, type) are all free (a folder scan by several replicas at
        once); return how many were inserted."""
        if not records:
            return 0
        rows = await self._pool.fetch(Q.insert_missing_models, [_columns(record) for record in records])
        return len(rows)

    async def update(self, key: str, changes: Mapping[str, object]) -> ModelRecord:
        """Set columns (ModelRecord field names; `key` too); raise ModelNotFound, or Conflict on a clash."""
        unknown = set(changes) - _FIELDS
        if unknown:
            raise ValueError(f"not model record fields: {sorted(unknown)}")
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(Q.lock_model, key)
            if row is None:
                raise ModelNotFound(key)
            record = ModelRecord.model_validate({**dict(row), **changes})
            # A new key may sort differently against its partners: re-add the relationships in order.
            related = [] if record.key == key else [r["key"] for r in await connection.fetch(Q.take_relationships, key)]
            try:
                updated = await connection.fetchrow(Q.update_model, key, record.key, _columns(record))
            except asyncpg.UniqueViolationError as error:
                raise _conflict(error, record) from None
            for other in related:
                await connection.execute(Q.insert_relationship, record.key, other)
        assert updated is not None
        return _record(updated)

    async def delete(self, key: str) -> ModelRecord:
        """Remove the row (its relationships go with it) and return it; raise ModelNotFound."""
        row = await self._pool.fetchrow(Q.delete_model, key)
        if row is None:
            raise ModelNotFound(key)
        return _record(row)

    async def related(self, key: str) -> list[str]:
        """Keys related to `key`, sorted (none for an unknown key)."""
        return [row["key"] for row in await self._pool.fetch(Q.related_keys, [key])]

    async def relate(self, key_1: str, key_2: str) -> None:
        """Add an undirected relationship; InvalidRequest for a self-relation, ModelNotFound for an unknown key,
        Conflict when it exists."""
        if key_1 == key_2:
            raise InvalidRequest("Cannot relate a model to itself.")
        try:
            inserted = await self._pool.fetchval(Q.insert_relationship, key_1, key_2)
        except asyncpg.ForeignKeyViolationError:
            known = await self.get_many([key_1, key_2])
            raise ModelNotFound(key_1 if key_1 not in known else key_2) from None
        if inserted is None:
            raise Conflict("These models are already related.")

    async def unrelate(self, key_1: str, key_2: str) -> None:
        """Remove it; InvalidRequest for a self-relation, NotFound when there is none."""
        if key_1 == key_2:
            raise InvalidRequest("Cannot relate a model to itself.")
        if await self._pool.fetchval(Q.delete_relationship, key_1, key_2) is None:
            raise NotFound("These models are not related.")

    async def related_to_any(self, keys: Collection[str]) -> list[str]:
        """The union of keys related to any of `keys`, sorted."""
        if not keys:
            return []
        return [row["key"] for row in await self._pool.fetch(Q.related_keys, list(keys))]


class PgCacheStats:
    """Each Diffusion replica's model cache stats, one row per replica."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def report(self, replica_id: str, stats: Mapping[str, object]) -> None:
        """Upsert this replica's row, stamped now."""
        await self._pool.execute(Q.report_cache_stats, replica_id, dict(stats))

    async def remove(self, replica_id: str) -> None:
        """Drop the row of a replica that is shutting down."""
        await self._pool.execute(Q.remove_cache_stats, replica_id)

    async def live(self, max_age_s: float) -> list[dict[str, object]]:
        """Stats of the replicas that reported within `max_age_s` (by the database's clock)."""
        rows = await self._pool.fetch(Q.live_cache_stats, max_age_s)
        return [dict(row["stats"]) for row in rows]


class PgModelSettings:
    """Small server-wide values by name (table `model_settings`)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, name: str) -> str | None:
        value: str | None = await self._pool.fetchval(Q.get_setting, name)
        return value

    async def set(self, name: str, value: str) -> None:
        await self._pool.execute(Q.set_setting, name, value)

    async def delete(self, name: str) -> None:
        await self._pool.execute(Q.delete_setting, name)
