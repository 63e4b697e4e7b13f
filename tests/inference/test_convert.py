"""convert_to_diffusers: a single-file checkpoint becomes a diffusers folder that generates the same pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from serve_app.domain.errors import Conflict, GenerationFailed, InvalidRequest
from serve_app.domain.models import ModelFormat, ModelSpec
from serve_app.inference.convert import convert_to_diffusers
from serve_app.inference.model_cache import ModelCache
from serve_app.inference.runner import GenerationRunner
from tests.inference.conftest import TinyModels
from tests.inference.support import pixels, request


def _as_folder(spec: ModelSpec, folder: Path) -> ModelSpec:
    return spec.model_copy(
        update={"format": ModelFormat.DIFFUSERS, "path": str(folder), "config_path": None, "key": f"{spec.key}-dir"}
    )


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_the_converted_folder_generates_the_pixels_of_the_file(tmp_path: Path, models: TinyModels, family: str) -> None:
    single: ModelSpec = getattr(models, f"{family}_file")
    dest = tmp_path / "converted" / f"{single.name}-diffusers"

    convert_to_diffusers(single, dest)

    assert json.loads((dest / "model_index.json").read_text())["_class_name"].startswith("StableDiffusion")
    assert list(dest.glob("unet/*.safetensors")) and not list(dest.rglob("*.bin"))
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no staging folder left
    runner = GenerationRunner(ModelCache())
    job = request(width=64, height=64, steps=2)
    from_file = runner.run(single, job).images[0]
    from_folder = runner.run(_as_folder(single, dest), job).images[0]
    assert np.array_equal(pixels(from_file), pixels(from_folder))


def test_an_fp16_checkpoint_gives_an_fp16_folder(tmp_path: Path, models: TinyModels) -> None:
    state = load_file(models.sd15_file.path)
    half = tmp_path / "half.safetensors"
    save_file({key: value.half() for key, value in state.items()}, str(half))
    spec = models.sd15_file.model_copy(update={"path": str(half), "name": "half", "key": "half"})

    convert_to_diffusers(spec, tmp_path / "half-diffusers")

    weights = load_file(str(tmp_path / "half-diffusers" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {value.dtype for value in weights.values()} == {torch.float16}


def test_an_existing_destination_is_a_conflict_and_stays_as_it_was(tmp_path: Path, models: TinyModels) -> None:
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")

    with pytest.raises(Conflict):
        convert_to_diffusers(models.sd15_file, dest)

    assert [p.name for p in dest.iterdir()] == ["mine.txt"]


def test_an_unreadable_checkpoint_leaves_nothing_behind(tmp_path: Path, models: TinyModels) -> None:
    broken = tmp_path / "in" / "broken.safetensors"
    broken.parent.mkdir()
    broken.write_bytes(b"not a checkpoint")
    spec = models.sd15_file.model_copy(update={"path": str(broken), "name": "broken", "key": "broken"})
    out = tmp_path / "out"

    with pytest.raises(GenerationFailed):
        convert_to_diffusers(spec, out / "broken-diffusers")

    assert not out.exists() or list(out.iterdir()) == []


def test_only_main_checkpoints_with_a_config_convert(tmp_path: Path, models: TinyModels) -> None:
    without_config = models.sd15_file.model_copy(update={"config_path": None})

    with pytest.raises(InvalidRequest, match="not a main checkpoint"):
        convert_to_diffusers(models.sd15, tmp_path / "a")
    with pytest.raises(InvalidRequest, match="config"):
        convert_to_diffusers(without_config, tmp_path / "b")
    assert list(tmp_path.iterdir()) == []
