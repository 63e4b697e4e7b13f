"""ModelService: the model registry with the files behind it. Registers models found in the models folder or
given by path (probed, hashed, copied in), renames, deletes and converts them, keeps their cover images, and
answers cache stats from what the Diffusion replicas report.

Files are touched only inside the models folder, except that registering and scanning may read from the
configured import roots; every path is resolved (symlinks followed) and checked before anything is read
(model_files.ModelsFolder).

The service is what routes, installs and wiring call. The work that touches files lives in collaborators built
here: ModelRegistration (model_registration.py: register by path, folder sync, scan_folder), ModelEditor
(model_edits.py: edits, deletes, convert) and ModelCovers (model_covers.py). What stays here is thin over the
ports: reading, relationships, cache stats and the Hugging Face token."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Protocol

from serve_app.domain.errors import ModelNotFound
from serve_app.domain.models import ModelRecord
from serve_app.domain.ports import BusMessage, CacheStatsStore, EventBus, ModelRegistry, ObjectStore
from serve_app.services.model_covers import ModelCovers
from serve_app.services.model_covers import cover_image_key as cover_image_key
from serve_app.services.model_edits import Converter, ModelEditor
from serve_app.services.model_files import FINGERPRINT_PREFIX as FINGERPRINT_PREFIX
from serve_app.services.model_files import ModelsFolder
from serve_app.services.model_registration import FolderScan, Hasher, ModelRegistration, Probe, Sizer

# The model-settings row holding the Hugging Face token.
HF_TOKEN_SETTING = "hf_token"
# Published to every replica; Diffusion replicas drop their unlocked models when they hear it.
CACHE_CLEAR_EVENT = "serve_app_model_cache_clear"
# Replicas report their cache stats every few seconds; older rows belong to replicas that are gone.
STATS_MAX_AGE_S = 60.0


class ModelSettingsStore(Protocol):
    """Small server-wide values by name (storage.model_registry.PgModelSettings)."""

    async def get(self, name: str) -> str | None: ...
    async def set(self, name: str, value: str) -> None: ...
    async def delete(self, name: str) -> None: ...


def _aggregate(rows: Sequence[dict[str, object]]) -> dict[str, Any]:
    """One `CacheStats` for the whole deployment from each replica's."""

    def number(row: dict[str, object], name: str) -> int:
        value = row.get(name, 0)
        return int(value) if isinstance(value, int | float) else 0

    sizes: dict[str, int] = {}
    for row in rows:
        loaded = row.get("loaded_model_sizes")
        if isinstance(loaded, dict):
            sizes.update({str(name): int(size) for name, size in loaded.items()})
    return {
        "hits": sum(number(row, "hits") for row in rows),
        "misses": sum(number(row, "misses") for row in rows),
        "high_watermark": max(number(row, "high_watermark") for row in rows),
        "in_cache": sum(number(row, "in_cache") for row in rows),
        "cleared": sum(number(row, "cleared") for row in rows),
        "cache_size": sum(number(row, "cache_size") for row in rows),
        "loaded_model_sizes": sizes,
    }


class ModelService:
    """Model management over the registry port; files, probing, hashing and conversion are injected."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        models_dir: Path,
        store: ObjectStore,
        bus: EventBus | None,
        cache_stats: CacheStatsStore | None,
        settings: ModelSettingsStore,
        probe: Probe,
        hasher: Hasher,
        sizer: Sizer,
        scan: FolderScan,
        converter: Converter | None = None,
        allowed_roots: Sequence[Path] = (),
        resync_interval_s: float | None = None,
    ) -> None:
        """`scan(models_dir)` lists the models of the models folder (storage.model_catalog). With
        `resync_interval_s`, listings register models copied into the folder since, at most that often."""
        self._registry = registry
        self._bus = bus
        self._cache_stats = cache_stats
        self._settings = settings
        folder = ModelsFolder(models_dir, allowed_roots)
        self.models_dir = folder.path
        self._registration = ModelRegistration(
            registry,
            folder,
            probe=probe,
            hasher=hasher,
            sizer=sizer,
            scan=scan,
            resync_interval_s=resync_interval_s,
        )
        covers = ModelCovers(registry, store)
        editor = ModelEditor(registry, folder, covers, hasher=hasher, sizer=sizer, converter=converter)
        # The collaborators' bound methods are this service's operations: each keeps one signature and one
        # docstring, where its code is, while callers go on calling them on the service.
        self.register_local = self._registration.register_local
        self.sync_folder = self._registration.sync_folder
        self.scan_folder = self._registration.scan_folder
        self.update = editor.update
        self.delete = editor.delete
        self.convert = editor.convert
        self.cover_image = covers.cover_image
        self.set_cover_image = covers.set_cover_image
        self.delete_cover_image = covers.delete_cover_image

    # Reading

    async def find(
        self,
        *,
        bases: Collection[str] | None = None,
        type: str | None = None,
        name: str | None = None,
        format: str | None = None,
    ) -> list[ModelRecord]:
        """Models matching every given filter (an empty or missing `bases` matches any), by name, base, type."""
        await self._registration.sync_if_due()
        return await self._registry.find(bases=bases, type=type, name=name, format=format)

    async def get(self, key: str) -> ModelRecord:
        """One model; raise ModelNotFound."""
        return await self._registry.get(key)

    async def get_by_attrs(self, name: str, type: str, base: str) -> ModelRecord:
        """The model with this name, type and base; raise ModelNotFound."""
        found = await self._registry.find(bases=[base], type=type, name=name)
        if not found:
            raise ModelNotFound(name)
        return found[0]

    # Relationships

    async def related(self, key: str) -> list[str]:
        """Keys related to `key`, sorted; ModelNotFound."""
        await self._registry.get(key)
        return await self._registry.related(key)

    async def relate(self, key_1: str, key_2: str) -> None:
        """InvalidRequest for a self-relation, ModelNotFound for an unknown key, Conflict when it exists."""
        await self._registry.relate(key_1, key_2)

    async def unrelate(self, key_1: str, key_2: str) -> None:
        """InvalidRequest for a self-relation, NotFound when there is none."""
        await self._registry.unrelate(key_1, key_2)

    async def related_to_any(self, keys: Collection[str]) -> list[str]:
        """The union of keys related to any of `keys`, sorted."""
        return await self._registry.related_to_any(keys)

    # Caches

    async def stats(self) -> dict[str, Any] | None:
        """InvokeAI's `CacheStats` over every live Diffusion replica; None before any replica reported."""
        if self._cache_stats is None:
            return None
        rows = await self._cache_stats.live(max_age_s=STATS_MAX_AGE_S)
        return _aggregate(rows) if rows else None

    async def empty_cache(self) -> None:
        """Ask every Diffusion replica to drop the models it is not using."""
        if self._bus is not None:
            await self._bus.publish(BusMessage(event=CACHE_CLEAR_EVENT, room=None, data={}))

    # Hugging Face token

    async def hf_token(self) -> str | None:
        return await self._settings.get(HF_TOKEN_SETTING)

    async def set_hf_token(self, token: str) -> None:
        await self._settings.set(HF_TOKEN_SETTING, token)

    async def clear_hf_token(self) -> None:
        await self._settings.delete(HF_TOKEN_SETTING)
