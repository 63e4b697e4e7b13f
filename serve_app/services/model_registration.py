"""Registering models for ModelService: one given by path (probed, hashed, copied or moved into the models
folder), every model found in the models folder that is not registered yet (folder sync), and the models a
folder holds (scan_folder, what the install UI picks from)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serve_app.domain.errors import Conflict, InvalidRequest, ServeAppError
from serve_app.domain.models import (
    ModelChanges,
    ModelFamily,
    ModelRecord,
    ModelSpec,
    ModelType,
    ProbedModel,
    SourceType,
)
from serve_app.domain.ports import ModelRegistry
from serve_app.services import model_files as files
from serve_app.services.model_files import ModelsFolder

logger = logging.getLogger(__name__)

# InvokeAI's `MainModelDefaultSettings.from_base`: the native size of the bases it has defaults for.
_NATIVE_SIZE = {ModelFamily.SD1: 512, ModelFamily.SD2: 768, ModelFamily.SDXL: 1024}

Probe = Callable[[Path, ModelFamily | None], ProbedModel]
Hasher = Callable[[Path], str]
Sizer = Callable[[Path], int]
FolderScan = Callable[[Path], list[ModelSpec]]


def default_settings_for(base: ModelFamily, type_: ModelType) -> dict[str, Any] | None:
    """A new main model's default settings, as InvokeAI probes them: its native size, when it has one."""
    size = _NATIVE_SIZE.get(base)
    if type_ is not ModelType.MAIN or size is None:
        return None
    return {"width": size, "height": size}


async def refuse_name_clash(
    registry: ModelRegistry, name: str, base: ModelFamily, type_: ModelType, *, key: str | None = None
) -> None:
    """Conflict when another model (not `key`) has this name, base and type."""
    # Checked before any file is copied or moved; the registry's unique constraint still decides races.
    clash = [record for record in await registry.find(bases=[base], type=type_, name=name) if record.key != key]
    if clash:
        raise Conflict(f"A {base} {type_} model named {name!r} already exists")


class ModelRegistration:
    """Adds models to the registry; `scan(models_dir)` lists the models of the models folder
    (storage.model_catalog)."""

    def __init__(
        self,
        registry: ModelRegistry,
        folder: ModelsFolder,
        *,
        probe: Probe,
        hasher: Hasher,
        sizer: Sizer,
        scan: FolderScan,
        resync_interval_s: float | None,
    ) -> None:
        self._registry = registry
        self._folder = folder
        self._probe = probe
        self._hasher = hasher
        self._sizer = sizer
        self._scan = scan
        self._resync_interval_s = resync_interval_s
        self._synced_at = float("-inf")

    async def register_local(
        self,
        path: Path,
        *,
        inplace: bool,
        changes: ModelChanges,
        source: str,
        source_type: SourceType = SourceType.PATH,
        source_api_response: str | None = None,
    ) -> ModelRecord:
        """Probe, hash and register the model at `path`, copied into the models folder unless `inplace`.
        Forbidden outside the models folder and the import roots; InvalidRequest when missing;
        UnsupportedMediaType when unrecognised; Conflict on a clash (and nothing copied stays behind)."""
        origin = self._folder.checked(str(path))
        if not origin.exists():
            raise InvalidRequest(f"{path} does not exist")
        probed = await asyncio.to_thread(self._probe, origin, changes.base)
        base = changes.base or probed.base
        type_ = changes.type or probed.type
        name = changes.name or probed.name
        await refuse_name_clash(self._registry, name, base, type_)
        config_path = changes.config_path or probed.config_path
        # What this call put into the models folder, and where each came from if it was moved rather than copied.
        created: list[tuple[Path, Path | None]] = []
        try:
            if inplace:
                target = origin
            else:
                target = self._folder.install_path(base, type_, name, origin)
                # Downloads arrive in a hidden folder of the models folder: moved, not copied.
                move = self._folder.is_staging(origin)
                config_dir = files.companion(origin)
                has_companion = origin.is_file() and probed.config_path is not None
                has_companion = has_companion and Path(str(probed.config_path)) == config_dir
                await asyncio.to_thread(functools.partial(files.place, origin, target, move=move))
                created.append((target, origin if move else None))
                if has_companion:
                    await asyncio.to_thread(
                        functools.partial(files.place, config_dir, files.companion(target), move=move)
                    )
                    created.append((files.companion(target), config_dir if move else None))
                    if changes.config_path is None:
                        config_path = str(files.companion(target))
            file_hash = changes.hash or await asyncio.to_thread(self._hasher, target)
            file_size = (
                changes.file_size if changes.file_size is not None else await asyncio.to_thread(self._sizer, target)
            )
            record = ModelRecord(
                key=changes.key or str(uuid.uuid4()),
                hash=file_hash,
                path=str(target),
                file_size=file_size,
                name=name,
                base=base,
                type=type_,
                format=changes.format or probed.format,
                source=source,
                source_type=source_type,
                description=changes.description or f"{base} {type_} model {name}",
                source_api_response=source_api_response,
                trigger_phrases=changes.trigger_phrases,
                default_settings=(
                    changes.default_settings
                    if changes.default_settings is not None
                    else default_settings_for(base, type_)
                ),
                variant=changes.variant or probed.variant,
                prediction_type=changes.prediction_type or probed.prediction_type,
                upcast_attention=(
                    changes.upcast_attention if changes.upcast_attention is not None else probed.upcast_attention
                ),
                config_path=config_path,
                repo_variant=probed.repo_variant,
            )
            return await self._registry.add(record)
        except BaseException:
            for placed, moved_from in created:
                if moved_from is None:
                    await asyncio.to_thread(self._folder.remove_inside, placed)
                else:
                    await asyncio.to_thread(self._folder.put_back, placed, moved_from)
            raise

    async def sync_if_due(self) -> None:
        """Sync the models folder when `resync_interval_s` has passed since the last sync (never without one)."""
        if self._resync_interval_s is not None and time.monotonic() - self._synced_at >= self._resync_interval_s:
            await self.sync_folder()

    async def sync_folder(self) -> int:
        """Register every model found in the models folder that is not registered yet (key derived from type and
        name, in place, cheap fingerprint); return how many were added. Safe to run from several replicas."""
        self._synced_at = time.monotonic()
        specs = await asyncio.to_thread(self._scan, self._folder.path)
        known = {record.path for record in await self._registry.find()}
        new = [spec for spec in specs if spec.path not in known]
        if not new:
            return 0
        records = await asyncio.to_thread(lambda: [_found_record(spec) for spec in new])
        added = await self._registry.add_missing(records)
        if added:
            logger.info("Registered %d model(s) found in %s", added, self._folder.path)
        return added

    async def scan_folder(self, path: str) -> list[tuple[str, bool]]:
        """The models directly inside folder `path` (those probing recognises), each with whether a registered
        model has that path. Forbidden outside the allowed roots; InvalidRequest when not a folder."""
        folder = self._folder.checked(path)
        if not folder.is_dir():
            raise InvalidRequest(f"The search path '{path}' does not exist or is not directory")
        records = await self._registry.find()

        def scan() -> list[tuple[str, bool]]:
            installed = {str(Path(record.path).resolve()) for record in records}
            found = []
            for entry in files.visible_entries(folder):
                if entry.name.endswith(".config") or self._try_probe(entry) is None:
                    continue
                found.append((str(entry), str(entry.resolve()) in installed))
            return found

        return await asyncio.to_thread(scan)

    def _try_probe(self, path: Path) -> ProbedModel | None:
        try:
            return self._probe(path, None)
        except (ServeAppError, OSError) as error:
            logger.debug("not a model: %s (%s)", path, error)
            return None
        except Exception:  # an odd file must not fail a whole folder scan (pickles can raise anything)
            logger.warning("Could not probe %s", path, exc_info=True)
            return None


def _found_record(spec: ModelSpec) -> ModelRecord:
    size, file_hash = files.fingerprint(Path(spec.path))
    return ModelRecord(
        key=spec.key,
        hash=file_hash,
        path=spec.path,
        file_size=size,
        name=spec.name,
        base=spec.family,
        type=spec.type,
        format=spec.format,
        source=spec.path,
        source_type=SourceType.PATH,
        description=f"{spec.family} {spec.type} model {spec.name}",
        default_settings=default_settings_for(spec.family, spec.type),
        variant=spec.variant if spec.type is ModelType.MAIN else None,
        prediction_type=spec.prediction_type,
        upcast_attention=spec.upcast_attention,
        config_path=spec.config_path,
    )
