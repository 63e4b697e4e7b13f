"""ModelService: the model registry with the files behind it. Registers models found in the models folder or
given by path (probed, hashed, copied in), renames, deletes and converts them, keeps their cover images, and
answers cache stats from what the Diffusion replicas report.

Files are touched only inside the models folder, except that registering and scanning may read from the
configured import roots; every path is resolved (symlinks followed) and checked before anything is read."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import os
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from serve_app.domain.errors import (
    Conflict,
    Forbidden,
    ImageNotFound,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    ServeAppError,
    ServiceUnavailable,
)
from serve_app.domain.imaging import DecodeLimits, decode_upload
from serve_app.domain.models import (
    ModelChanges,
    ModelFamily,
    ModelFormat,
    ModelRecord,
    ModelSpec,
    ModelType,
    ProbedModel,
    SourceType,
)
from serve_app.domain.ports import BusMessage, CacheStatsStore, EventBus, ModelRegistry, ObjectStore
from serve_app.services import model_files as files
from serve_app.services.model_files import FINGERPRINT_PREFIX as FINGERPRINT_PREFIX

logger = logging.getLogger(__name__)

# The model-settings row holding the Hugging Face token.
HF_TOKEN_SETTING = "hf_token"
# Published to every replica; Diffusion replicas drop their unlocked models when they hear it.
CACHE_CLEAR_EVENT = "serve_app_model_cache_clear"
# Replicas report their cache stats every few seconds; older rows belong to replicas that are gone.
STATS_MAX_AGE_S = 60.0
# InvokeAI stores cover images shrunk to fit this square.
COVER_IMAGE_SIZE = 256
# InvokeAI's `MainModelDefaultSettings.from_base`: the native size of the bases it has defaults for.
_NATIVE_SIZE = {ModelFamily.SD1: 512, ModelFamily.SD2: 768, ModelFamily.SDXL: 1024}
# Record fields a change may not set to null.
_REQUIRED = frozenset(
    {"name", "base", "type", "format", "path", "hash", "file_size", "source", "source_type", "upcast_attention", "key"}
)

Probe = Callable[[Path, ModelFamily | None], ProbedModel]
Hasher = Callable[[Path], str]
Sizer = Callable[[Path], int]
FolderScan = Callable[[Path], list[ModelSpec]]
Converter = Callable[[ModelSpec, Path], None]


class ModelSettingsStore(Protocol):
    """Small server-wide values by name (storage.model_registry.PgModelSettings)."""

    async def get(self, name: str) -> str | None: ...
    async def set(self, name: str, value: str) -> None: ...
    async def delete(self, name: str) -> None: ...


def cover_image_key(key: str) -> str:
    """The object-store key of a model's cover image."""
    return f"model_images/{key}.png"


def default_settings_for(base: ModelFamily, type_: ModelType) -> dict[str, Any] | None:
    """A new main model's default settings, as InvokeAI probes them: its native size, when it has one."""
    size = _NATIVE_SIZE.get(base)
    if type_ is not ModelType.MAIN or size is None:
        return None
    return {"width": size, "height": size}


def _cover_png(data: bytes) -> bytes:
    decoded = decode_upload(data, DecodeLimits())
    image = decoded.image
    image.thumbnail((COVER_IMAGE_SIZE, COVER_IMAGE_SIZE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


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
        self.models_dir = models_dir.absolute()
        self._store = store
        self._bus = bus
        self._cache_stats = cache_stats
        self._settings = settings
        self._probe = probe
        self._hasher = hasher
        self._sizer = sizer
        self._scan = scan
        self._converter = converter
        self._models_root = models_dir.resolve()
        self._roots = [self._models_root, *(root.resolve() for root in allowed_roots)]
        self._resync_interval_s = resync_interval_s
        self._synced_at = float("-inf")

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
        if self._resync_interval_s is not None and time.monotonic() - self._synced_at >= self._resync_interval_s:
            await self.sync_folder()
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

    # Registering

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
        origin = self._checked_path(str(path))
        if not origin.exists():
            raise InvalidRequest(f"{path} does not exist")
        probed = await asyncio.to_thread(self._probe, origin, changes.base)
        base = changes.base or probed.base
        type_ = changes.type or probed.type
        name = changes.name or probed.name
        await self._refuse_name_clash(name, base, type_)
        config_path = changes.config_path or probed.config_path
        # What this call put into the models folder, and where each came from if it was moved rather than copied.
        created: list[tuple[Path, Path | None]] = []
        try:
            if inplace:
                target = origin
            else:
                target = self._install_path(base, type_, name, origin)
                # Downloads arrive in a hidden folder of the models folder: moved, not copied.
                move = self._is_staging(origin)
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
                    await asyncio.to_thread(self._remove_inside, placed)
                else:
                    await asyncio.to_thread(self._put_back, placed, moved_from)
            raise

    async def sync_folder(self) -> int:
        """Register every model found in the models folder that is not registered yet (key derived from type and
        name, in place, cheap fingerprint); return how many were added. Safe to run from several replicas."""
        self._synced_at = time.monotonic()
        specs = await asyncio.to_thread(self._scan, self.models_dir)
        known = {record.path for record in await self._registry.find()}
        new = [spec for spec in specs if spec.path not in known]
        if not new:
            return 0
        records = await asyncio.to_thread(lambda: [self._found_record(spec) for spec in new])
        added = await self._registry.add_missing(records)
        if added:
            logger.info("Registered %d model(s) found in %s", added, self.models_dir)
        return added

    def _try_probe(self, path: Path) -> ProbedModel | None:
        try:
            return self._probe(path, None)
        except (ServeAppError, OSError) as error:
            logger.debug("not a model: %s (%s)", path, error)
            return None
        except Exception:  # an odd file must not fail a whole folder scan (pickles can raise anything)
            logger.warning("Could not probe %s", path, exc_info=True)
            return None

    @staticmethod
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

    # Changing

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
            values["path"] = str(self._checked_path(values["path"]))
        merged = record.model_copy(update=values)
        if (merged.name, merged.base, merged.type) != (record.name, record.base, record.type):
            await self._refuse_name_clash(merged.name, merged.base, merged.type, key=key)
        moves = [] if "path" in values else self._moves_for(record, merged)
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

    def _moves_for(self, record: ModelRecord, merged: ModelRecord) -> list[tuple[Path, Path]]:
        """The renames that keep a model's files named after it: [(file or folder), (its config folder)]."""
        old = Path(record.path)
        if not self._inside_models_dir(old) or not old.exists():
            return []
        installed_in = self.models_dir / record.base / record.type
        parent = self.models_dir / merged.base / merged.type if old.parent == installed_in else old.parent
        name = files.file_name(merged.name)
        if old.is_file() and old.suffix and not name.endswith(old.suffix):
            name += old.suffix
        new = parent / name
        if new == old:
            return []
        moves = [(old, new)]
        if (
            record.config_path is not None
            and Path(record.config_path) == files.companion(old)
            and files.companion(old).is_dir()
        ):
            moves.append((files.companion(old), files.companion(new)))
        return moves

    async def delete(self, key: str) -> None:
        """Unregister a model (its relationships go too), delete its files when they are inside the models folder
        (never elsewhere), and its cover image. ModelNotFound."""
        record = await self._registry.delete(key)
        await asyncio.to_thread(self._remove_files, record)
        await self._store.delete([cover_image_key(key)])

    def _remove_files(self, record: ModelRecord) -> None:
        path = Path(record.path)
        config_dir = files.companion(path)
        if record.config_path is not None and Path(record.config_path) == config_dir:
            self._remove_inside(config_dir)
        self._remove_inside(path)

    def _remove_inside(self, path: Path) -> None:
        """Remove a file or folder if it is inside the models folder, then the folders it leaves empty
        (`<base>/<type>/`)."""
        if not self._inside_models_dir(path):
            return
        files.remove(path)
        self._prune_empty_parents(path)

    def _put_back(self, placed: Path, moved_from: Path) -> None:
        os.rename(placed, moved_from)
        self._prune_empty_parents(placed)

    def _prune_empty_parents(self, path: Path) -> None:
        parent = path.parent
        while parent != self.models_dir and self._inside_models_dir(parent):
            try:
                parent.rmdir()
            except OSError:  # not empty (or gone)
                break
            parent = parent.parent

    # Cover images

    async def cover_image(self, key: str) -> bytes:
        """The PNG cover image; ModelNotFound, or NotFound when the model has none."""
        record = await self._registry.get(key)
        if not record.has_cover_image:
            raise NotFound(f"Model {key} has no cover image")
        try:
            return await self._store.get(cover_image_key(key))
        except ImageNotFound:
            raise NotFound(f"Model {key} has no cover image") from None

    async def set_cover_image(self, key: str, data: bytes) -> None:
        """Store an uploaded image (any format PIL reads; UnsupportedMediaType otherwise) as the cover, a PNG
        shrunk to fit 256 px."""
        await self._registry.get(key)
        png = await asyncio.to_thread(_cover_png, data)
        await self._store.put(cover_image_key(key), png, "image/png")
        await self._registry.update(key, {"has_cover_image": True})

    async def delete_cover_image(self, key: str) -> None:
        """Remove the cover image (none is not an error); ModelNotFound."""
        await self._registry.get(key)
        await self._store.delete([cover_image_key(key)])
        await self._registry.update(key, {"has_cover_image": False})

    # Folders

    async def scan_folder(self, path: str) -> list[tuple[str, bool]]:
        """The models directly inside folder `path` (those probing recognises), each with whether a registered
        model has that path. Forbidden outside the allowed roots; InvalidRequest when not a folder."""
        folder = self._checked_path(path)
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
        dest = self.models_dir / record.base / ModelType.MAIN / files.file_name(Path(record.path).stem)
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
                await asyncio.to_thread(self._remove_inside, dest)
            raise
        await asyncio.to_thread(self._remove_files, record)
        if record.has_cover_image:
            with contextlib.suppress(ImageNotFound):
                data = await self._store.get(cover_image_key(key))
                await self._store.put(cover_image_key(new_key), data, "image/png")
            await self._store.delete([cover_image_key(key)])
        return converted

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

    # Paths

    def _checked_path(self, path: str) -> Path:
        """`path` resolved (relative to the models folder, symlinks followed); Forbidden unless inside the models
        folder or an import root. Nothing is read."""
        if "\x00" in path or not path.strip():
            raise InvalidRequest(f"Invalid path {path!r}")
        resolved = (self.models_dir / path).resolve()  # an absolute `path` replaces models_dir
        if not any(resolved.is_relative_to(root) for root in self._roots):
            raise Forbidden(f"{path} is outside the folders models may be read from")
        return resolved

    def _is_staging(self, path: Path) -> bool:
        """Inside a hidden folder of the models folder (where installs download to), never a registered model."""
        if not self._inside_models_dir(path):
            return False
        return path.resolve().relative_to(self._models_root).parts[0].startswith(".")

    def _inside_models_dir(self, path: Path) -> bool:
        resolved = path.resolve()
        return resolved != self._models_root and resolved.is_relative_to(self._models_root)

    def _install_path(self, base: ModelFamily, type_: ModelType, name: str, origin: Path) -> Path:
        stored_name = files.file_name(name)
        if origin.is_file() and origin.suffix and not stored_name.endswith(origin.suffix):
            stored_name += origin.suffix
        return self.models_dir / base / type_ / stored_name

    async def _refuse_name_clash(
        self, name: str, base: ModelFamily, type_: ModelType, *, key: str | None = None
    ) -> None:
        # Checked before any file is copied or moved; the registry's unique constraint still decides races.
        clash = [
            record for record in await self._registry.find(bases=[base], type=type_, name=name) if record.key != key
        ]
        if clash:
            raise Conflict(f"A {base} {type_} model named {name!r} already exists")
