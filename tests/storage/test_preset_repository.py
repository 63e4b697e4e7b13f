"""PgPresetStore on a real Postgres: a preset round-trips whole, names are unique, renames and deletes."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.domain.errors import Conflict, NotFound
from serve_app.domain.presets import ModelPreset, WeightedModel
from serve_app.storage.preset_repository import PgPresetStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def presets(pool) -> PgPresetStore:
    return PgPresetStore(pool)


FULL = ModelPreset(
    name="SDXL",
    checkpoint="sd_xl_base_1.0.safetensors",
    size=1024,
    prompt="RAW photo",
    negative_prompt="blurry",
    refiner="sd_xl_refiner_1.0.safetensors",
    refiner_size=1024,
    inpainter="sd_xl_inpaint.safetensors",
    inpainter_size=512,
    scheduler="ddim",
    vae="xl16",
    refiner_vae="xl",
    inpainter_vae="mse",
    lora=[WeightedModel(model="a.safetensors", weight=0.5), WeightedModel(model="b.safetensors")],
    lycoris=[WeightedModel(model="c.safetensors", weight=-1.25)],
    inversion=["easynegative.pt", "other.safetensors"],
    config={"width": 1024, "guidance_scale": 5.5, "upscale": ["esrgan"], "prompt_2": "style"},
)


async def test_a_preset_round_trips_with_every_field(presets):
    assert await presets.create(FULL) == FULL
    assert await presets.get("SDXL") == FULL
    assert await presets.all() == [FULL]


async def test_defaults_and_order_by_name(presets):
    for name in ("b", "C", "a"):
        await presets.create(ModelPreset(name=name, checkpoint="x.ckpt"))
    listed = await presets.all()
    assert [preset.name for preset in listed] == sorted(["b", "C", "a"])
    assert listed[0] == ModelPreset(name=listed[0].name, checkpoint="x.ckpt", size=512)


async def test_a_taken_name_is_a_conflict_and_the_first_preset_stays(presets):
    await presets.create(FULL)
    with pytest.raises(Conflict, match="SDXL already exists"):
        await presets.create(ModelPreset(name="SDXL", checkpoint="other.ckpt"))
    assert await presets.get("SDXL") == FULL


async def test_concurrent_creates_of_one_name_store_one(presets):
    results = await asyncio.gather(
        *(presets.create(ModelPreset(name="race", checkpoint=f"{i}.ckpt")) for i in range(5)), return_exceptions=True
    )
    assert sum(isinstance(result, ModelPreset) for result in results) == 1
    assert sum(isinstance(result, Conflict) for result in results) == 4
    assert len(await presets.all()) == 1


async def test_replace_overwrites_everything_and_can_rename(presets):
    await presets.create(FULL)
    plain = ModelPreset(name="SDXL", checkpoint="new.safetensors", size=768)
    assert await presets.replace("SDXL", plain) == plain
    assert await presets.get("SDXL") == plain  # relations and config are gone, not merged
    renamed = plain.model_copy(update={"name": "Renamed"})
    assert await presets.replace("SDXL", renamed) == renamed
    with pytest.raises(NotFound, match="No DiffusionModel found with name=SDXL"):
        await presets.get("SDXL")
    assert await presets.get("Renamed") == renamed


async def test_replace_unknown_is_not_found_and_rename_onto_another_is_a_conflict(presets):
    with pytest.raises(NotFound):
        await presets.replace("missing", FULL)
    await presets.create(FULL)
    await presets.create(ModelPreset(name="other", checkpoint="o.ckpt"))
    with pytest.raises(Conflict):
        await presets.replace("other", FULL)  # FULL is named SDXL, which is taken
    assert (await presets.get("other")).checkpoint == "o.ckpt"


async def test_delete(presets):
    await presets.create(FULL)
    await presets.delete("SDXL")
    assert await presets.all() == []
    with pytest.raises(NotFound, match="name=SDXL"):
        await presets.delete("SDXL")
