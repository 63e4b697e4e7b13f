"""Changing registered models for ModelService: edits (renaming or re-basing a model moves its files to match),
deletes and conversion of checkpoints to diffusers folders. The registry row and the files change together: the
files move first, and when the row cannot be written they are put back (or what was made is removed)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from serve_app.domain.errors import Conflict, InvalidRequest, ServiceUnavailable
from serve_app.domain.models import ModelChanges, ModelFormat, ModelRecord, ModelSpec, ModelType
from serve_app.domain.ports import ModelRegistry
from serve_app.services import model_files as files
from serve_app.services.model_covers import ModelCovers
from serve_app.services.model_files import ModelsFolder
from serve_app.services.model_registration import Hasher, Sizer, refuse_name_clash

Converter = Callable[[ModelSpec, Path], None]

# Record fields a change may not set to null.
_REQUIRED = frozenset(
    {"name", "base", "type", "format", "path", "hash", "file_size", "source", "source_type", "upcast_attention", "key"}
)


class ModelEditor:
    """Edits, deletes and converts registered models with the files (and cover images) behind them."""

    def __init__(
        self,
        registry: ModelRegistry,
        folder: ModelsFolder,
        covers: ModelCovers,
        *,
        hasher: Hasher,
        sizer: Sizer,
        converter: Converter | None,
    ) -> None:
        self._registry = registry
        self._folder = folder
        self._covers = covers
        self._hasher = hasher
        self._sizer = sizer
        self._converter = converter

    async def update(self, key: str, changes: ModelChanges) -> ModelRecord:
        """Apply the fields set in `changes`. Renaming (or re-basing) a model stored in the models folder moves
        its files to match and updates `path`. ModelNotFound; Conflict on a clash; Forbidden for a path outside
        the allowed roots."""
        record = await self._registry.get(key)
        values = {
            name: value
            for name, value in changes.model_dump(exclude_unset=True).items()
            if value is not None or name not in _REQUIRED
        }
        values.pop("key", None)  # keys are for ever (cover images and graphs refer to them)
        if "path" in values:
            values["path"] = str(self._folder.checked(values["path"]))
        merged = record.model_copy(update=values)
        if (merged.name, merged.base, merged.type) != (record.name, record.base, record.type):
            await refuse_name_clash(self._registry, merged.name, merged.base, merged.type, key=key)
        moves = [] if "path" in values else self._folder.renames_for(record, merged)
        for old, new in moves:
            await asyncio.to_thread(files.move, old, new)
        if moves:
            values["path"] = str(moves[0][1])
            if len(moves) > 1:
                values["config_path"] = str(moves[1][1])
        try:
            return await self._registry.update(key, values)
        except BaseException:
            for old, new in reversed(moves):
                await asyncio.to_thread(os.rename, new, old)
            raise

    async def delete(self, key: str) -> None:
        """Unregister a model (its relationships go too), delete its files when they are inside the models folder
        (never elsewhere), and its cover image. ModelNotFound."""
        record = await self._registry.delete(key)
        await asyncio.to_thread(self._folder.remove_files, record)
        await self._covers.discard(key)

    async def convert(self, key: str) -> ModelRecord:
        """Convert a main single-file checkpoint into a diffusers folder `<models>/<base>/main/<stem>`: the record
        keeps its name and relationships, gets a new key, hash, path and format; the checkpoint file goes when
        it was inside the models folder. ModelNotFound; InvalidRequest for other models; Conflict when the
        folder exists; ServiceUnavailable without a converter."""
        record = await self._registry.get(key)
        if record.type is not ModelType.MAIN or record.format is not ModelFormat.CHECKPOINT:
            raise InvalidRequest(f"The model with key {key} is not a main checkpoint model.")
        if self._converter is None:
            raise ServiceUnavailable("Converting models is not available on this server.")
        converter = self._converter
        dest = self._folder.path / record.base / ModelType.MAIN / files.file_name(Path(record.path).stem)
        if dest.exists():
            raise Conflict(f"{dest} already exists")
        staging = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        new_key = str(uuid.uuid4())
        placed = False
        try:
            staging.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(converter, record.spec(), staging)
            await asyncio.to_thread(files.move, staging, dest)
            placed = True
            file_hash = await asyncio.to_thread(self._hasher, dest)
            file_size = await asyncio.to_thread(self._sizer, dest)
            converted = await self._registry.update(
                key,
                {
                    "key": new_key,
                    "path": str(dest),
                    "format": ModelFormat.DIFFUSERS,
                    "hash": file_hash,
                    "file_size": file_size,
                    "config_path": None,
                    "converted_at": time.time(),
                },
            )
        except BaseException:
            await asyncio.to_thread(files.remove, staging)
            if placed:
                await asyncio.to_thread(self._folder.remove_inside, dest)
            raise
        await asyncio.to_thread(self._folder.remove_files, record)
        await self._covers.move(record, new_key)
        return converted
