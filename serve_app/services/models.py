"""ModelService: the model catalog as records with on-disk facts (total size, a cheap fingerprint), filtered."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from serve_app.domain.errors import ModelNotFound
from serve_app.domain.models import ModelSpec
from serve_app.domain.ports import ModelCatalog

FINGERPRINT_PREFIX = "fingerprint:"


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """A catalog entry plus what its files say: total bytes and a fingerprint of names, sizes and mtimes."""

    spec: ModelSpec
    file_size: int
    hash: str


class ModelService:
    """Read-only model listing for the InvokeAI model manager routes (install/update/delete come later)."""

    def __init__(
        self, catalog: ModelCatalog, *, refresh: Callable[[], None] | None = None, refresh_interval_s: float = 10.0
    ) -> None:
        """`refresh` (e.g. `DirectoryModelCatalog.refresh`) rescans the catalog; listings call it at most every
        `refresh_interval_s`, so models copied into the folder show up without a restart."""
        self._catalog = catalog
        self._refresh = refresh
        self._refresh_interval_s = refresh_interval_s
        self._refreshed_at = float("-inf")

    async def _fresh_specs(self) -> list[ModelSpec]:
        if self._refresh is not None and time.monotonic() - self._refreshed_at >= self._refresh_interval_s:
            self._refreshed_at = time.monotonic()
            await asyncio.to_thread(self._refresh)
        return self._catalog.list()

    async def list(
        self,
        *,
        base_models: Collection[str] | None = None,
        model_type: str | None = None,
        model_name: str | None = None,
        model_format: str | None = None,
    ) -> list[ModelRecord]:
        """Every model matching all given filters (an empty or missing `base_models` matches any base)."""
        specs = [
            spec
            for spec in await self._fresh_specs()
            if (not base_models or spec.family in base_models)
            and (model_type is None or spec.type == model_type)
            and (model_name is None or spec.name == model_name)
            and (model_format is None or spec.format == model_format)
        ]
        return await asyncio.to_thread(lambda: [describe(spec) for spec in specs])

    async def get(self, key: str) -> ModelRecord:
        """One model by key; raise ModelNotFound."""
        spec = self._catalog.get(key)
        return await asyncio.to_thread(describe, spec)

    async def get_by_attrs(self, name: str, type_: str, base: str) -> ModelRecord:
        """The first model (in listing order) with this name, type and base; raise ModelNotFound."""
        for spec in await self._fresh_specs():
            if spec.name == name and spec.type == type_ and spec.family == base:
                return await asyncio.to_thread(describe, spec)
        raise ModelNotFound(name)


def describe(spec: ModelSpec) -> ModelRecord:
    """Stat the model's files (blocking): total size, and a fingerprint that changes when any file does.

    The fingerprint hashes relative names, sizes and modification times, not contents: cheap, stable while the
    files are untouched, but not comparable across hosts holding separate copies. Content hashes (InvokeAI's
    `blake3:`) come with model management."""
    root = Path(spec.path)
    files = _files(root)
    digest = hashlib.sha256()
    total = 0
    for relative, size, mtime_ns in files:
        total += size
        digest.update(f"{relative}\0{size}\0{mtime_ns}\n".encode())
    return ModelRecord(spec=spec, file_size=total, hash=FINGERPRINT_PREFIX + digest.hexdigest())


def _files(root: Path) -> list[tuple[str, int, int]]:
    if root.is_file():
        stat = root.stat()
        return [(root.name, stat.st_size, stat.st_mtime_ns)]
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in names:
            path = Path(folder, name)
            try:
                stat = path.stat()
            except OSError:
                continue  # vanished meanwhile
            found.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    return sorted(found)
