"""PgPresetStore: the PresetStore port in Postgres (SQL in sql/presets.sql).

A preset is one row: its relations (Enfugue's refiner, VAE, LoRA, ... tables) are columns and jsonb lists, so a
create or a wholesale replace is one statement and one transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, LiteralString

import asyncpg

from serve_app.domain.errors import Conflict, NotFound
from serve_app.domain.presets import ModelPreset
from serve_app.domain.rest_query import RestQuery
from serve_app.storage.queries import load
from serve_app.storage.rest_query_sql import Column, ColumnKind, fetch_page


@dataclasses.dataclass(frozen=True, slots=True)
class PresetQueries:
    """One attribute per `-- name:` block of sql/presets.sql."""

    all_presets: LiteralString
    preset_source: LiteralString
    get_preset: LiteralString
    insert_preset: LiteralString
    replace_preset: LiteralString
    delete_preset: LiteralString


Q = load(PresetQueries, "sql/presets.sql")

# Enfugue's DiffusionModel columns (enfugue-api.md §8) over `(preset_source) AS q`; `model` is the checkpoint.
PRESET_COLUMNS = {
    "name": Column("q.name"),
    "model": Column("q.checkpoint"),
    "size": Column("q.size", ColumnKind.INTEGER),
    "prompt": Column("q.prompt"),
    "negative_prompt": Column("q.negative_prompt"),
}


def _not_found(name: str) -> NotFound:
    # Enfugue's wording for a REST lookup by scope (its generic handler names the ORM class).
    return NotFound(f"No DiffusionModel found with name={name}")


def _values(preset: ModelPreset) -> tuple[Any, ...]:
    return (
        preset.name,
        preset.checkpoint,
        preset.size,
        preset.prompt,
        preset.negative_prompt,
        preset.refiner,
        preset.refiner_size,
        preset.inpainter,
        preset.inpainter_size,
        preset.scheduler,
        preset.vae,
        preset.refiner_vae,
        preset.inpainter_vae,
        [item.model_dump() for item in preset.lora],
        [item.model_dump() for item in preset.lycoris],
        list(preset.inversion),
        dict(preset.config),
    )


def _preset(row: Mapping[str, Any]) -> ModelPreset:
    return ModelPreset.model_validate({key: value for key, value in row.items() if key in ModelPreset.model_fields})


class PgPresetStore:
    """Enfugue's model presets; every method is one statement."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def all(self) -> list[ModelPreset]:
        return [_preset(row) for row in await self._pool.fetch(Q.all_presets)]

    async def query(self, query: RestQuery) -> tuple[list[ModelPreset], int]:
        rows, count = await fetch_page(self._pool, Q.preset_source, (), query, PRESET_COLUMNS, tiebreak="q.name")
        return [_preset(row) for row in rows], count

    async def get(self, name: str) -> ModelPreset:
        row = await self._pool.fetchrow(Q.get_preset, name)
        if row is None:
            raise _not_found(name)
        return _preset(row)

    async def create(self, preset: ModelPreset) -> ModelPreset:
        row = await self._pool.fetchrow(Q.insert_preset, *_values(preset))
        if row is None:
            raise Conflict(f"Model {preset.name} already exists")
        return _preset(row)

    async def replace(self, name: str, preset: ModelPreset) -> ModelPreset:
        try:
            row = await self._pool.fetchrow(Q.replace_preset, name, *_values(preset))
        except asyncpg.UniqueViolationError:
            raise Conflict(f"Model {preset.name} already exists") from None
        if row is None:
            raise _not_found(name)
        return _preset(row)

    async def delete(self, name: str) -> None:
        if await self._pool.fetchval(Q.delete_preset, name) is None:
            raise _not_found(name)
