"""ModelCache: entries per (model, submodel) with sizes, budgets and LRU eviction, pins, stats, clear."""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec, ModelType
from serve_app.inference.loading import pick_device
from serve_app.inference.model_cache import ModelCache, size_of
from tests.inference.conftest import TinyModels
from tests.support.golden import golden_body

_SD15_PARTS = ("text_encoder", "tokenizer", "unet", "scheduler", "vae")


def _blob_spec(tmp_path: Path, name: str, file_bytes: int = 0) -> ModelSpec:
    """A standalone model whose file is `file_bytes` long (what the cache estimates a load at)."""
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(b"\0" * file_bytes)
    return ModelSpec(name=name, family=ModelFamily.SD1, format=ModelFormat.LYCORIS, path=str(path), type=ModelType.LORA)


def _blob(size: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.zeros(size, dtype=torch.uint8)


def _module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def test_stats_have_invokeais_shape_with_a_size_per_submodel(models: TinyModels) -> None:
    cache = ModelCache()
    parts = {name: cache.get(models.sd15, name) for name in _SD15_PARTS}
    assert cache.get(models.sd15, "unet") is parts["unet"]

    stats = cache.stats()

    assert set(stats) == set(golden_body("35-models-stats-after-load.json"))
    sizes = stats["loaded_model_sizes"]
    assert set(sizes) == {f"sd-1:main:tiny-sd15:{name}" for name in _SD15_PARTS}
    assert sizes["sd-1:main:tiny-sd15:tokenizer"] == sizes["sd-1:main:tiny-sd15:scheduler"] == 0
    for name in ("unet", "text_encoder", "vae"):
        assert sizes[f"sd-1:main:tiny-sd15:{name}"] == _module_bytes(parts[name]) > 0
    assert (stats["hits"], stats["misses"], stats["in_cache"], stats["cleared"]) == (1, 5, 5, 0)
    assert stats["high_watermark"] == sum(sizes.values())
    assert stats["cache_size"] == cache.ram_bytes


def test_a_single_file_is_read_once_for_all_its_parts(models: TinyModels) -> None:
    cache = ModelCache()

    unet = cache.get(models.sd15_file, "unet")
    vae = cache.get(models.sd15_file, "vae")

    assert unet is not vae
    stats = cache.stats()
    assert (stats["misses"], stats["hits"], stats["in_cache"]) == (1, 1, 5)


def test_standalone_models_count_as_whole_entries(tmp_path: Path) -> None:
    cache = ModelCache()
    spec = _blob_spec(tmp_path, "blob")

    cache.get(spec, load=_blob(1000))

    assert cache.stats()["loaded_model_sizes"] == {"sd-1:lora:blob:": 1000}


def test_the_least_recently_used_entry_goes_first(tmp_path: Path) -> None:
    cache = ModelCache(ram_bytes=1000)
    a, b, c = (_blob_spec(tmp_path, name) for name in "abc")
    first = cache.get(a, load=_blob(400))
    cache.get(b, load=_blob(400))
    assert cache.get(a, load=_blob(400)) is first  # a hit, and now the most recently used

    cache.get(c, load=_blob(400))

    assert cache.loaded() == ["sd-1:lora:a:", "sd-1:lora:c:"]
    assert cache.used_bytes() == (800, 0)


def test_room_is_made_before_loading(tmp_path: Path) -> None:
    cache = ModelCache(ram_bytes=1000)
    old = _blob_spec(tmp_path, "old", file_bytes=600)
    new = _blob_spec(tmp_path, "new", file_bytes=600)
    cache.get(old, load=_blob(600))
    held_while_loading: list[str] = []

    def load() -> torch.Tensor:
        held_while_loading.extend(cache.loaded())
        return torch.zeros(600, dtype=torch.uint8)

    cache.get(new, load=load)

    assert held_while_loading == []  # the old model was gone before the new one was read
    assert cache.loaded() == ["sd-1:lora:new:"]


def test_an_evicted_model_is_really_freed(tmp_path: Path) -> None:
    cache = ModelCache(ram_bytes=5000)
    big = _blob_spec(tmp_path, "big")
    module = cache.get(big, load=lambda: torch.nn.Linear(30, 30))  # 3720 bytes
    alive = weakref.ref(module)
    del module

    cache.get(_blob_spec(tmp_path, "other"), load=_blob(3000))

    assert alive() is None
    assert cache.loaded() == ["sd-1:lora:other:"]


def test_weightless_parts_go_with_the_last_weighted_part_of_their_model(tmp_path: Path, models: TinyModels) -> None:
    cache = ModelCache()
    for name in _SD15_PARTS:
        cache.get(models.sd15, name)
    cache.ram_bytes = sum(cache.used_bytes())

    cache.get(_blob_spec(tmp_path, "other"), load=_blob(cache.ram_bytes))

    assert cache.loaded() == ["sd-1:lora:other:"]


def test_entries_in_use_are_never_evicted_until_the_block_ends(tmp_path: Path) -> None:
    cache = ModelCache(ram_bytes=1000)
    a, b, c = (_blob_spec(tmp_path, name) for name in "abc")

    with cache.in_use():
        cache.get(a, load=_blob(600))
        cache.get(b, load=_blob(600))  # over budget, but `a` is held by this call
        assert cache.loaded() == ["sd-1:lora:a:", "sd-1:lora:b:"]
    cache.get(c, load=_blob(100))

    assert cache.loaded() == ["sd-1:lora:b:", "sd-1:lora:c:"]


def test_a_model_larger_than_the_budget_still_loads_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ModelCache(ram_bytes=100)
    small, huge = _blob_spec(tmp_path, "small"), _blob_spec(tmp_path, "huge")
    cache.get(small, load=_blob(50))

    with caplog.at_level(logging.WARNING, logger="serve_app.inference.model_cache"):
        value = cache.get(huge, load=_blob(500))

    assert value.numel() == 500
    assert cache.loaded() == ["sd-1:lora:huge:"]
    assert any("sd-1:lora:huge:" in r.getMessage() and "loaded anyway" in r.getMessage() for r in caplog.records)


def test_clear_drops_what_no_call_holds_and_counts_it(tmp_path: Path) -> None:
    cache = ModelCache()
    held, idle = _blob_spec(tmp_path, "held"), _blob_spec(tmp_path, "idle")
    cache.get(idle, load=_blob(10))
    cleared: list[int] = []

    with cache.in_use():
        cache.get(held, load=_blob(10))
        # `empty_model_cache` arrives on the event loop's thread while the job's thread holds `held`.
        other = threading.Thread(target=lambda: cleared.append(cache.clear()))
        other.start()
        other.join()
        assert cache.loaded() == ["sd-1:lora:held:"]
    cleared.append(cache.clear())

    assert cleared == [1, 1]
    stats = cache.stats()
    assert (stats["cleared"], stats["in_cache"], stats["loaded_model_sizes"]) == (2, 0, {})


def test_on_change_reports_loads_evictions_and_clears(tmp_path: Path) -> None:
    reports: list[dict[str, Any]] = []
    cache = ModelCache(ram_bytes=1000, on_change=reports.append)
    a, b = _blob_spec(tmp_path, "a"), _blob_spec(tmp_path, "b")

    cache.get(a, load=_blob(600))
    cache.get(a, load=_blob(600))  # a hit: nothing changed
    cache.get(b, load=_blob(600))  # evicts `a`
    cache.clear()

    assert [sorted(r["loaded_model_sizes"]) for r in reports] == [["sd-1:lora:a:"], ["sd-1:lora:b:"], []]
    assert reports[-1]["cleared"] == 1


def test_a_failing_on_change_never_fails_the_load(tmp_path: Path) -> None:
    def broken(stats: dict[str, Any]) -> None:
        raise RuntimeError("publisher down")

    cache = ModelCache(on_change=broken)

    assert cache.get(_blob_spec(tmp_path, "a"), load=_blob(5)).numel() == 5


def test_a_changed_spec_under_the_same_key_is_reloaded(tmp_path: Path) -> None:
    cache = ModelCache()
    spec = _blob_spec(tmp_path, "a")
    first = cache.get(spec, load=_blob(5))
    moved = spec.model_copy(update={"path": str(tmp_path / "moved.safetensors")})

    second = cache.get(moved, load=_blob(5))

    assert second is not first
    assert cache.stats()["misses"] == 2 and cache.stats()["in_cache"] == 1


def test_stats_never_wait_for_a_load_in_progress(tmp_path: Path) -> None:
    cache = ModelCache()
    loading, release = threading.Event(), threading.Event()

    def slow_load() -> torch.Tensor:
        loading.set()
        release.wait(timeout=30)
        return torch.zeros(10, dtype=torch.uint8)

    loader = threading.Thread(target=lambda: cache.get(_blob_spec(tmp_path, "slow"), load=slow_load))
    loader.start()
    try:
        assert loading.wait(timeout=30)
        answered = threading.Event()

        def read() -> None:
            cache.stats()
            cache.clear()
            answered.set()

        reader = threading.Thread(target=read)
        reader.start()
        assert answered.wait(timeout=10)  # while the loader is still inside its load
        assert not release.is_set()
    finally:
        release.set()
        loader.join()
    assert cache.loaded() == ["sd-1:lora:slow:"]


def test_main_models_are_cached_part_by_part(models: TinyModels) -> None:
    with pytest.raises(ValueError, match="submodel"):
        ModelCache().get(models.sd15)


def test_bytes_count_against_the_budget_of_the_device_they_are_on(tmp_path: Path) -> None:
    device, _ = pick_device()
    cache = ModelCache()

    cache.get(_blob_spec(tmp_path, "a"), device=device, load=lambda: torch.zeros(256, device=device))

    expected = (0, 1024) if device.type == "cuda" else (1024, 0)
    assert cache.used_bytes() == expected
    assert size_of(torch.zeros(4, device=device)) == ((0, 16) if device.type == "cuda" else (16, 0))


def test_sizes_count_shared_storage_once() -> None:
    linear = torch.nn.Linear(4, 4)
    tied = torch.nn.ModuleList([linear, linear])

    assert size_of(tied) == size_of(linear) == ((16 + 4) * 4, 0)
    gc.collect()
