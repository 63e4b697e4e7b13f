"""load_pipeline, PipelineCache and device choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from serve_app.domain.errors import GenerationFailed
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec
from serve_app.inference.loading import PipelineCache, _use_sdpa, load_pipeline, pick_device
from serve_app.inference.runner import GenerationRunner
from tests.inference.conftest import TinyModels
from tests.inference.support import pixels, request


def test_diffusers_folders_load_as_their_family(models: TinyModels) -> None:
    sd15 = load_pipeline(models.sd15, device="cpu", dtype=torch.float32)
    sdxl = load_pipeline(models.sdxl, device="cpu", dtype=torch.float32)

    assert (type(sd15), type(sdxl)) == (StableDiffusionPipeline, StableDiffusionXLPipeline)
    assert sd15.safety_checker is None
    assert sd15.vae_scale_factor == sdxl.vae_scale_factor == 8
    for pipe in (sd15, sdxl):
        for module in (pipe.unet, pipe.vae):
            assert all(isinstance(p, AttnProcessor2_0) for p in module.attn_processors.values())


def test_classic_attention_is_switched_to_sdpa(models: TinyModels) -> None:
    pipe = load_pipeline(models.sd15, device="cpu", dtype=torch.float32)
    pipe.unet.set_attn_processor(AttnProcessor())
    pipe.vae.set_attn_processor(AttnProcessor())

    _use_sdpa(pipe)

    for module in (pipe.unet, pipe.vae):
        assert all(isinstance(p, AttnProcessor2_0) for p in module.attn_processors.values())


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_a_single_file_checkpoint_gives_the_pixels_of_its_diffusers_folder(
    models: TinyModels, runner: GenerationRunner, family: str
) -> None:
    folder, single = getattr(models, family), getattr(models, f"{family}_file")
    job = request(width=64, height=96, num_images=2)

    from_folder = runner.run(folder, job)
    from_file = runner.run(single, job)

    for a, b in zip(from_folder.images, from_file.images, strict=True):
        assert np.array_equal(pixels(a), pixels(b))


def test_the_cache_evicts_the_least_recently_used(models: TinyModels) -> None:
    cache = PipelineCache(2)

    first = cache.get(models.sd15)
    cache.get(models.sdxl)
    assert cache.get(models.sd15) is first  # a hit, and now the most recently used
    cache.get(models.sd15_file)

    assert cache.loaded() == ["tiny-sd15", "tiny-sd15-file"]
    assert cache.get(models.sd15) is first


def test_the_cache_reloads_when_a_names_spec_changes(models: TinyModels) -> None:
    cache = PipelineCache(2)
    first = cache.get(models.sd15)
    moved = models.sd15_file.model_copy(update={"name": models.sd15.name})

    second = cache.get(moved)

    assert second is not first
    assert cache.loaded() == ["tiny-sd15"]


@pytest.mark.parametrize("format", [ModelFormat.DIFFUSERS, ModelFormat.CHECKPOINT])
def test_a_missing_model_fails_the_job_clearly(models: TinyModels, format: ModelFormat) -> None:
    missing = ModelSpec(
        name="ghost",
        family=ModelFamily.SD1,
        format=format,
        path=str(models.root / "ghost.safetensors"),
        config_path=models.sd15_file.config_path,
    )

    with pytest.raises(GenerationFailed, match="ghost") as raised:
        load_pipeline(missing, device="cpu", dtype=torch.float32)

    assert raised.value.error_type == "ModelLoadError"


def test_the_cache_needs_room_for_one_model() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        PipelineCache(0)


def test_pick_device_matches_the_hardware() -> None:
    device, dtype = pick_device()

    if torch.cuda.is_available():
        assert device.type == "cuda"
        assert dtype in (torch.bfloat16, torch.float16)
    else:
        assert (device, dtype) == (torch.device("cpu"), torch.float32)
