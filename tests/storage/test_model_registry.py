"""PgModelRegistry, PgCacheStats and PgModelSettings on a real Postgres."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from serve_app.domain.errors import Conflict, InvalidRequest, ModelNotFound, NotFound
from serve_app.domain.models import (
    ModelFamily,
    ModelFormat,
    ModelRecord,
    ModelType,
    ModelVariant,
    PredictionType,
    SourceType,
)
from serve_app.storage.db import create_pool
from serve_app.storage.model_registry import PgCacheStats, PgModelRegistry, PgModelSettings

pytestmark = pytest.mark.timeout(60)


def record(
    name: str, *, base: ModelFamily = ModelFamily.SD1, type_: ModelType = ModelType.MAIN, **fields: Any
) -> ModelRecord:
    values: dict[str, Any] = {
        "key": str(uuid.uuid4()),
        "hash": f"blake3:{name}",
        "path": f"/models/{base}/{type_}/{name}",
        "file_size": 1234,
        "name": name,
        "base": base,
        "type": type_,
        "format": ModelFormat.DIFFUSERS,
        "source": f"/imports/{name}",
        **fields,
    }
    return ModelRecord(**values)


@pytest.fixture
def registry(pool: Any) -> PgModelRegistry:
    return PgModelRegistry(pool)


async def test_add_get_and_every_column_round_trips(registry):
    full = record(
        "full",
        source_type=SourceType.HF_REPO_ID,
        description="a description",
        source_api_response='{"id": "x"}',
        has_cover_image=True,
        trigger_phrases=["ink", "sketch"],
        default_settings={"width": 512, "height": 512, "scheduler": "euler"},
        variant=ModelVariant.INPAINT,
        prediction_type=PredictionType.V_PREDICTION,
        upcast_attention=True,
        config_path="/models/full.config",
        repo_variant="fp16",
        converted_at=1700000000.5,
        submodels={"vae": {"path_or_prefix": "vae", "model_type": "vae", "variant": None}},
        usage_info="notes",
    )
    added = await registry.add(full)

    assert added.created_at is not None and added.updated_at is not None
    assert added.model_dump(exclude={"created_at", "updated_at"}) == full.model_dump(
        exclude={"created_at", "updated_at"}
    )
    assert await registry.get(full.key) == added
    assert await registry.by_path(full.path) == added
    assert await registry.by_path("/nowhere") is None
    with pytest.raises(ModelNotFound):
        await registry.get("missing")


async def test_find_filters_and_orders_by_name_base_type(registry):
    a_sd1 = await registry.add(record("a"))
    a_xl = await registry.add(record("a", base=ModelFamily.SDXL))
    b_lora = await registry.add(record("b", type_=ModelType.LORA, format=ModelFormat.LYCORIS))
    c_xl = await registry.add(record("c", base=ModelFamily.SDXL))

    assert [r.key for r in await registry.find()] == [a_sd1.key, a_xl.key, b_lora.key, c_xl.key]
    assert [r.key for r in await registry.find(bases=[])] == [a_sd1.key, a_xl.key, b_lora.key, c_xl.key]
    assert [r.key for r in await registry.find(bases=["sdxl"])] == [a_xl.key, c_xl.key]
    assert [r.key for r in await registry.find(bases=["sdxl", "sd-1"], type="main")] == [a_sd1.key, a_xl.key, c_xl.key]
    assert [r.key for r in await registry.find(name="a", bases=["sdxl"])] == [a_xl.key]
    assert [r.key for r in await registry.find(format="lycoris")] == [b_lora.key]
    assert await registry.find(name="A") == []
    assert set(await registry.get_many([a_sd1.key, c_xl.key, "missing"])) == {a_sd1.key, c_xl.key}
    assert await registry.get_many([]) == {}


async def test_add_refuses_a_taken_key_path_or_name_base_type(registry):
    first = await registry.add(record("one"))
    with pytest.raises(Conflict, match="key"):
        await registry.add(record("other", key=first.key))
    with pytest.raises(Conflict, match="already installed"):
        await registry.add(record("other", path=first.path))
    with pytest.raises(Conflict, match="named 'one'"):
        await registry.add(record("one", path="/elsewhere"))
    # The same name with another base or type is a different model.
    await registry.add(record("one", base=ModelFamily.SDXL))
    await registry.add(record("one", type_=ModelType.VAE))
    assert len(await registry.find(name="one")) == 3


async def test_update_sets_columns_and_refuses_clashes(registry):
    one = await registry.add(record("one"))
    two = await registry.add(record("two"))

    updated = await registry.update(one.key, {"name": "uno", "trigger_phrases": ["x"], "description": None})
    assert (updated.name, updated.trigger_phrases, updated.description) == ("uno", ["x"], None)
    assert updated.updated_at is not None and one.updated_at is not None and updated.updated_at >= one.updated_at
    assert await registry.get(one.key) == updated

    with pytest.raises(Conflict):
        await registry.update(one.key, {"name": "two"})
    with pytest.raises(Conflict):
        await registry.update(one.key, {"path": two.path})
    assert (await registry.get(one.key)).name == "uno"
    with pytest.raises(ModelNotFound):
        await registry.update("missing", {"name": "x"})
    with pytest.raises(ValueError, match="not model record fields"):
        await registry.update(one.key, {"colour": "red"})


async def test_a_key_change_keeps_relationships(registry):
    low = await registry.add(record("low", key="1-low"))
    middle = await registry.add(record("middle", key="5-middle"))
    high = await registry.add(record("high", key="9-high"))
    await registry.relate(middle.key, low.key)
    await registry.relate(middle.key, high.key)

    # The new key sorts after both partners: the stored pairs must be re-ordered, not just renamed.
    await registry.update(middle.key, {"key": "z-middle"})

    assert await registry.related("z-middle") == [low.key, high.key]
    assert await registry.related(low.key) == ["z-middle"]
    assert await registry.related(middle.key) == []


async def test_delete_returns_the_row_and_drops_its_relationships(registry):
    one = await registry.add(record("one"))
    two = await registry.add(record("two"))
    await registry.relate(one.key, two.key)

    deleted = await registry.delete(one.key)

    assert deleted.key == one.key
    assert await registry.related(two.key) == []
    with pytest.raises(ModelNotFound):
        await registry.delete(one.key)


async def test_relationships(registry):
    a, b, c, d = [await registry.add(record(name)) for name in "abcd"]

    await registry.relate(b.key, a.key)
    await registry.relate(a.key, c.key)
    with pytest.raises(Conflict):
        await registry.relate(a.key, b.key)  # either order is the same relationship
    with pytest.raises(InvalidRequest):
        await registry.relate(a.key, a.key)
    with pytest.raises(ModelNotFound) as missing:
        await registry.relate(a.key, "missing")
    assert missing.value.name == "missing"

    assert await registry.related(a.key) == sorted([b.key, c.key])
    assert await registry.related(b.key) == [a.key]
    assert await registry.related(d.key) == []
    assert await registry.related_to_any([b.key, c.key]) == [a.key]
    assert await registry.related_to_any([a.key, d.key]) == sorted([b.key, c.key])
    assert await registry.related_to_any([]) == []

    await registry.unrelate(c.key, a.key)
    assert await registry.related(a.key) == [b.key]
    with pytest.raises(NotFound):
        await registry.unrelate(a.key, c.key)
    with pytest.raises(InvalidRequest):
        await registry.unrelate(a.key, a.key)


async def test_add_missing_from_two_replicas_at_once_inserts_each_model_once(database_url, registry):
    taken = await registry.add(record("taken"))
    found = [record(f"found-{i}", key=f"key-{i}", path=f"/models/found-{i}") for i in range(20)]
    # Free key and path, but the name, base and type of a registered model: skipped, not an error.
    clash = record("taken", key="key-clash", path="/models/clash")
    pools = [await create_pool(database_url, min_size=1, max_size=2) for _ in range(2)]
    try:
        replicas = [PgModelRegistry(p) for p in pools]
        counts = await asyncio.gather(
            replicas[0].add_missing([*found, clash]), replicas[1].add_missing([clash, *reversed(found)])
        )
    finally:
        for p in pools:
            await p.close()

    assert sum(counts) == len(found)
    listed = await registry.find()
    assert sorted(r.key for r in listed) == sorted([taken.key, *(r.key for r in found)])
    assert await registry.add_missing(found) == 0
    assert await registry.add_missing([]) == 0


async def test_cache_stats_live_rows_only(pool):
    stats = PgCacheStats(pool)
    await stats.report("replica-b", {"hits": 1, "loaded_model_sizes": {"m:unet": 10}})
    await stats.report("replica-a", {"hits": 2})
    await stats.report("replica-a", {"hits": 3})  # an upsert, not a second row

    assert await stats.live(max_age_s=60) == [{"hits": 3}, {"hits": 1, "loaded_model_sizes": {"m:unet": 10}}]

    await pool.execute("UPDATE model_cache_stats SET updated_at = now() - interval '2 minutes' WHERE replica_id = $1",
                       "replica-b")  # fmt: skip
    assert await stats.live(max_age_s=60) == [{"hits": 3}]
    await stats.remove("replica-a")
    assert await stats.live(max_age_s=3600) == [{"hits": 1, "loaded_model_sizes": {"m:unet": 10}}]


async def test_model_settings(pool):
    settings = PgModelSettings(pool)
    assert await settings.get("hf_token") is None
    await settings.set("hf_token", "secret-1")
    await settings.set("hf_token", "secret-2")
    assert await settings.get("hf_token") == "secret-2"
    await settings.delete("hf_token")
    await settings.delete("hf_token")
    assert await settings.get("hf_token") is None
