"""ModelCache: the models a replica keeps loaded, per (model key, submodel), within a RAM and a VRAM budget.

Entries are a main model's parts (unet, text_encoder, tokenizer, scheduler, vae, ...) and whole standalone
models (a VAE, a parsed LoRA, an embedding), each with its size in bytes (parameters and buffers) on the CPU
(counted against `ram_bytes`) and on CUDA (counted against `vram_bytes`). A load that would exceed a budget
first evicts the least recently used entries that no running call holds; one model larger than the whole
budget still loads, with a warning. Evicting drops the cache's references and collects them, so the memory
really goes back (to the CUDA caching allocator's pool and then the driver, via `empty_cache`).

Pinning: every entry fetched inside `with cache.in_use():` stays pinned until the block exits, so a node
loading its LoRAs cannot evict the UNet it is about to patch. Pins belong to the thread that took them.

Threads: the replica loads and runs on one worker thread, but `stats()` and `clear()` are called from the
event loop's thread, so every bookkeeping step holds `_lock`. Loading itself (seconds) happens outside it,
so a stats request never waits for a load.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from serve_app.domain.models import ModelSpec, ModelType
from serve_app.inference.loading import estimate_bytes, load_parts

logger = logging.getLogger(__name__)

# What a load produced: the part asked for, and for single-file main models every other part too (they were
# all read from the one file; dropping them would only mean reading it again).
Parts = Mapping[str | None, Any]
# (spec, submodel, device, dtype) -> parts; the default loads main models' parts (`loading.load_parts`).
Loader = Callable[[ModelSpec, str | None, torch.device, torch.dtype], Parts]
# Called with `stats()` after loads, evictions and clears (on whichever thread did them).
OnChange = Callable[[dict[str, Any]], None]

_GIB = 1024**3
# Headroom left to activations when the VRAM budget is derived from the GPU's size.
_VRAM_SHARE = 0.9
_RAM_SHARE = 0.5

_Key = tuple[str, str | None]


def default_ram_bytes() -> int:
    """Half of this machine's physical memory (8 GiB where it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * _RAM_SHARE)
    except (ValueError, OSError, AttributeError):
        return 8 * _GIB


def default_vram_bytes() -> int:
    """90% of the first GPU's memory; 0 without CUDA."""
    if not torch.cuda.is_available():
        return 0
    return int(torch.cuda.get_device_properties(0).total_memory * _VRAM_SHARE)


def stats_name(spec: ModelSpec, submodel: str | None) -> str:
    """InvokeAI's key in `loaded_model_sizes`: `<base>:<type>:<name>:<submodel>` (empty submodel: whole model)."""
    return f"{spec.family}:{spec.type}:{spec.name}:{submodel or ''}"


def size_of(value: Any) -> tuple[int, int]:
    """(CPU bytes, CUDA bytes) of every distinct tensor in `value`: a module's parameters and buffers, tensors,
    and those inside dataclasses, tuples, lists and dicts. Tokenizers and schedulers hold none: (0, 0)."""
    seen: set[tuple[str, int]] = set()
    ram = vram = 0
    for tensor in _tensors(value):
        if tensor.device.type == "meta":
            continue
        storage = (str(tensor.device), tensor.untyped_storage().data_ptr())
        if storage in seen:
            continue  # tied weights share one storage
        seen.add(storage)
        size = tensor.untyped_storage().nbytes()
        if tensor.device.type == "cuda":
            vram += size
        else:
            ram += size
    return ram, vram


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            yield item
        elif isinstance(item, torch.nn.Module):
            yield from item.parameters()
            yield from item.buffers()
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            stack.extend(getattr(item, field.name) for field in dataclasses.fields(item))
        elif isinstance(item, (tuple, list)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())


@dataclass
class _Entry:
    spec: ModelSpec
    submodel: str | None
    placement: tuple[str, torch.dtype]
    value: Any
    ram: int
    vram: int
    locks: int = 0

    @property
    def name(self) -> str:
        return stats_name(self.spec, self.submodel)


class ModelCache:
    """Loaded models by (key, submodel), least recently used evicted first; see the module docstring."""

    def __init__(
        self,
        *,
        ram_bytes: int | None = None,
        vram_bytes: int | None = None,
        loader: Loader | None = None,
        on_change: OnChange | None = None,
    ) -> None:
        self.ram_bytes = default_ram_bytes() if ram_bytes is None else ram_bytes
        self.vram_bytes = default_vram_bytes() if vram_bytes is None else vram_bytes
        # Assignable after construction: the replica attaches its publisher once it has an event loop.
        self.on_change = on_change
        self._loader = loader or load_parts
        self._lock = threading.RLock()
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self._pins = threading.local()
        self._hits = 0
        self._misses = 0
        self._cleared = 0
        self._high_watermark = 0

    # -- use ------------------------------------------------------------------------------

    def get(
        self,
        spec: ModelSpec,
        submodel: str | None = None,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        load: Callable[[], Any] | None = None,
    ) -> Any:
        """The loaded `submodel` of `spec` (None: the whole model; main models always name a part), loaded on a
        miss or when the spec or placement changed. `load()` replaces the cache's loader for this entry."""
        if spec.type is ModelType.MAIN and submodel is None and load is None:
            raise ValueError(f"Main model {spec.name}: name the submodel to load (unet, vae, text_encoder, ...)")
        key: _Key = (spec.key, submodel)
        target = torch.device(device)
        placement = (str(target), dtype)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.spec == spec and entry.placement == placement:
                self._hits += 1
                self._entries.move_to_end(key)
                self._pin(entry)
                return entry.value
            self._misses += 1
            evicted = [self._pop(key)] if entry is not None else []
        # Make room before loading, so two large models never sit in memory at once (the estimate reads file
        # sizes: not under the lock, which a stats request from the event loop may be waiting for).
        needed = estimate_bytes(spec, submodel)
        on_gpu = target.type == "cuda"
        with self._lock:
            evicted += self._fit(extra_ram=0 if on_gpu else needed, extra_vram=needed if on_gpu else 0, keep=())
        _free(evicted)
        try:
            parts: Parts = {submodel: load()} if load is not None else self._loader(spec, submodel, target, dtype)
        except BaseException:
            self._changed()  # the miss and any evictions still happened
            raise
        with self._lock:
            value = parts[submodel]
            added = []
            for part, part_value in parts.items():
                part_key: _Key = (spec.key, part)
                cached = self._entries.get(part_key)
                if part != submodel and cached is not None and (cached.spec, cached.placement) == (spec, placement):
                    continue  # the cached copy stays; this duplicate goes with `parts`
                ram, vram = size_of(part_value)
                self._entries[part_key] = _Entry(spec, part, placement, part_value, ram, vram)
                self._entries.move_to_end(part_key)
                added.append(part_key)
            self._pin(self._entries[key])
            evicted = self._fit(extra_ram=0, extra_vram=0, keep=added)
            self._high_watermark = max(self._high_watermark, self._used())
            self._warn_if_oversized(self._entries[key])
        _free(evicted)
        self._changed()
        return value

    @contextmanager
    def in_use(self) -> Iterator[None]:
        """Pin every entry fetched on this thread inside the block until it exits (nested blocks pin too)."""
        scopes = self._scopes()
        scope: dict[int, _Entry] = {}
        scopes.append(scope)
        try:
            yield
        finally:
            scopes.pop()
            with self._lock:
                for entry in scope.values():
                    entry.locks -= 1

    # -- state ----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """InvokeAI's `CacheStats`: hits and misses since start, the most bytes ever held, the entries held now
        with their sizes, entries dropped by `clear()`, and `cache_size` = the RAM budget in bytes."""
        with self._lock:
            sizes: dict[str, int] = {}
            for entry in self._entries.values():
                sizes[entry.name] = sizes.get(entry.name, 0) + entry.ram + entry.vram
            return {
                "hits": self._hits,
                "misses": self._misses,
                "high_watermark": self._high_watermark,
                "in_cache": len(self._entries),
                "cleared": self._cleared,
                "cache_size": self.ram_bytes,
                "loaded_model_sizes": sizes,
            }

    def loaded(self) -> list[str]:
        """Stats names of the entries held now, least recently used first."""
        with self._lock:
            return [entry.name for entry in self._entries.values()]

    def used_bytes(self) -> tuple[int, int]:
        """(RAM, VRAM) bytes held now."""
        with self._lock:
            return self._used_ram(), self._used_vram()

    def clear(self) -> int:
        """Drop every entry no running call holds (InvokeAI's `empty_model_cache`); return how many."""
        with self._lock:
            evicted = [self._pop(key) for key, entry in list(self._entries.items()) if entry.locks == 0]
            count = len(evicted)
            self._cleared += count
        _free(evicted)
        self._changed()
        return count

    # -- internals (callers hold _lock) ------------------------------------------------------

    def _scopes(self) -> list[dict[int, _Entry]]:
        scopes: list[dict[int, _Entry]] | None = getattr(self._pins, "scopes", None)
        if scopes is None:
            scopes = self._pins.scopes = []
        return scopes

    def _pin(self, entry: _Entry) -> None:
        # Pins are counted per entry object: a reload under the same key is a new entry with its own count.
        scopes = self._scopes()
        if scopes and id(entry) not in scopes[-1]:
            scopes[-1][id(entry)] = entry
            entry.locks += 1

    def _pop(self, key: _Key) -> _Entry:
        entry = self._entries.pop(key)
        logger.info("Evicted %s (%d MB)", entry.name, (entry.ram + entry.vram) // 2**20)
        return entry

    def _used_ram(self) -> int:
        return sum(entry.ram for entry in self._entries.values())

    def _used_vram(self) -> int:
        return sum(entry.vram for entry in self._entries.values())

    def _used(self) -> int:
        return self._used_ram() + self._used_vram()

    def _fit(self, *, extra_ram: int, extra_vram: int, keep: Collection[_Key]) -> list[_Entry]:
        """Evict unpinned entries, least recently used first, until both budgets hold `extra` more bytes."""
        evicted: list[_Entry] = []
        for budget, extra, field in ((self.ram_bytes, extra_ram, "ram"), (self.vram_bytes, extra_vram, "vram")):
            used = sum(getattr(entry, field) for entry in self._entries.values())
            for key, entry in list(self._entries.items()):
                if used + extra <= budget:
                    break
                if entry.locks or key in keep or getattr(entry, field) == 0:
                    continue
                used -= getattr(entry, field)
                evicted.append(self._pop(key))
        if evicted:
            # A model's weightless parts (tokenizers, scheduler) cost no budget but are not free either (a CLIP
            # vocabulary is megabytes of Python objects): they go with the last of its parts that weighs.
            weighted = {key for (key, _), entry in self._entries.items() if entry.ram or entry.vram}
            for key, entry in list(self._entries.items()):
                if key[0] not in weighted and not (entry.locks or key in keep or entry.ram or entry.vram):
                    evicted.append(self._pop(key))
        return evicted

    def _warn_if_oversized(self, entry: _Entry) -> None:
        if entry.ram > self.ram_bytes or entry.vram > self.vram_bytes:
            logger.warning(
                "%s needs %d MB RAM and %d MB VRAM, more than the cache's budget (%d MB RAM, %d MB VRAM); "
                "loaded anyway",
                entry.name,
                entry.ram // 2**20,
                entry.vram // 2**20,
                self.ram_bytes // 2**20,
                self.vram_bytes // 2**20,
            )

    def _changed(self) -> None:
        callback = self.on_change
        if callback is not None:
            try:
                callback(self.stats())
            except Exception:
                # Stats are a report; a failing publisher must never fail the job that loaded a model.
                logger.exception("Model cache on_change callback failed")


def _free(evicted: list[_Entry]) -> None:
    if not evicted:
        return
    on_gpu = any(entry.vram for entry in evicted)
    evicted.clear()  # the last references the cache held
    gc.collect()  # modules hold reference cycles; collect them now, not at some later allocation
    if on_gpu and torch.cuda.is_available():
        torch.cuda.empty_cache()
