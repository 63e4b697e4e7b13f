"""load_pipeline, loading main models part by part, assembling pipelines, and device choice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from serve_app.domain.errors import GenerationFailed
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec
from serve_app.inference.loading import (
    _use_sdpa,
    assemble_pipeline,
    estimate_bytes,
    load_parts,
    load_pipeline,
    main_parts,
    pick_device,
)
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


def test_a_diffusers_part_loads_alone_with_the_pipelines_weights(models: TinyModels) -> None:
    pipe = load_pipeline(models.sd15, device="cpu", dtype=torch.float32)

    parts = load_parts(models.sd15, "unet", torch.device("cpu"), torch.float32)

    assert list(parts) == ["unet"]
    unet = parts["unet"]
    assert type(unet) is type(pipe.unet) and not unet.training
    assert all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())
    theirs = pipe.unet.state_dict()
    assert all(torch.equal(value, theirs[name]) for name, value in unet.state_dict().items())
    tokenizer = load_parts(models.sd15, "tokenizer", torch.device("cpu"), torch.float32)["tokenizer"]
    assert tokenizer.get_vocab() == pipe.tokenizer.get_vocab()


def test_a_single_file_yields_every_part_at_once(models: TinyModels) -> None:
    parts = load_parts(models.sdxl_file, "vae", torch.device("cpu"), torch.float32)

    assert set(parts) == set(main_parts(models.sdxl_file)) == {
        "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "unet", "scheduler", "vae",
    }  # fmt: skip


def test_parts_load_in_the_asked_dtype(models: TinyModels) -> None:
    unet = load_parts(models.sd15, "unet", torch.device("cpu"), torch.bfloat16)["unet"]

    assert {p.dtype for p in unet.parameters()} == {torch.bfloat16}


def test_an_fp16_only_folder_loads_its_variant_files(tmp_path: Path, models: TinyModels) -> None:
    folder = tmp_path / "fp16-only"
    shutil.copytree(models.sd15.path, folder)
    for weights in folder.glob("*/*.safetensors"):
        weights.rename(weights.with_name(weights.name.replace(".safetensors", ".fp16.safetensors")))
    spec = models.sd15.model_copy(update={"path": str(folder), "name": "fp16-only", "key": "fp16-only"})

    unet = load_parts(spec, "unet", torch.device("cpu"), torch.float32)["unet"]

    reference = load_parts(models.sd15, "unet", torch.device("cpu"), torch.float32)["unet"].state_dict()
    assert all(torch.equal(value, reference[name]) for name, value in unet.state_dict().items())


def test_an_assembled_pipeline_shares_the_parts_and_keeps_the_models_config(models: TinyModels) -> None:
    parts = load_parts(models.sdxl_file, "unet", torch.device("cpu"), torch.float32)

    pipe: Any = assemble_pipeline(models.sdxl_file, {name: part for name, part in parts.items() if name is not None})

    assert pipe.unet is parts["unet"] and pipe.vae is parts["vae"]
    index = json.loads((Path(models.sdxl_file.config_path or "") / "model_index.json").read_text())
    assert pipe.config.force_zeros_for_empty_prompt == index["force_zeros_for_empty_prompt"]
    assert type(pipe) is StableDiffusionXLPipeline


def test_a_part_the_model_does_not_have_is_a_clear_error(models: TinyModels) -> None:
    with pytest.raises(GenerationFailed, match="text_encoder_2") as raised:
        load_parts(models.sd15, "text_encoder_2", torch.device("cpu"), torch.float32)

    assert raised.value.error_type == "ModelLoadError"


def test_the_estimate_is_the_weights_on_disk(models: TinyModels) -> None:
    folder = Path(models.sd15.path)

    assert estimate_bytes(models.sd15, "unet") == sum(f.stat().st_size for f in (folder / "unet").glob("*.safetensors"))
    assert estimate_bytes(models.sd15, "tokenizer") == estimate_bytes(models.sd15, "scheduler") == 0
    assert estimate_bytes(models.sd15_file, "unet") == Path(models.sd15_file.path).stat().st_size


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


def test_pick_device_matches_the_hardware() -> None:
    device, dtype = pick_device()

    if torch.cuda.is_available():
        assert device.type == "cuda"
        assert dtype in (torch.bfloat16, torch.float16)
    else:
        assert (device, dtype) == (torch.device("cpu"), torch.float32)
