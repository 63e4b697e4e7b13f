"""spandrel_image_to_image(_autoscale) on tiny Real-ESRGAN-layout models, through the real graph engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from serve_app.domain.errors import GenerationFailed
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec, ModelType
from serve_app.inference.executor import InProcessExecutor
from serve_app.inference.upscaling import load_spandrel, read_state_dict, tiles
from serve_app.storage.model_probe import probe
from serve_app.storage.objects import FileObjectStore
from tests.inference.graphs.conftest import Run, gradient_image, identifier, output_image, pixels, run_session, upload
from tests.support.tiny_models import esrgan


def _spec(path: Path) -> ModelSpec:
    """The spec the registry would give the file: what the probe makes of it."""
    probed = probe(path)
    return ModelSpec(name=probed.name, family=probed.base, format=probed.format, path=str(path), type=probed.type)


@pytest.fixture(scope="module")
def upscalers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelSpec]:
    folder = tmp_path_factory.mktemp("upscalers")
    return {
        "x4": _spec(esrgan(folder, name="RealESRGAN_x4plus", scale=4)),
        "x2": _spec(esrgan(folder, name="RealESRGAN_x2plus", scale=2, suffix=".pth", seed=1)),
        "x1": _spec(esrgan(folder, name="tiny-denoise-1x", scale=1, seed=2)),
    }


def _graph(name: str, model: ModelSpec, node_type: str = "spandrel_image_to_image", **fields: Any) -> dict[str, Any]:
    return {
        "id": "upscale",
        "nodes": {
            "source": {"id": "source", "type": "image", "image": {"image_name": name}, "is_intermediate": True},
            "up": {"id": "up", "type": node_type, "image_to_image_model": identifier(model), **fields},
        },
        "edges": [
            {"source": {"node_id": "source", "field": "image"}, "destination": {"node_id": "up", "field": "image"}},
        ],
    }


async def _upscale(executor: InProcessExecutor, store: FileObjectStore, model: ModelSpec, image: Image.Image,
                   node_type: str = "spandrel_image_to_image", **fields: Any) -> tuple[Run, Image.Image]:  # fmt: skip
    name = await upload(store, image)
    run = await run_session(executor, _graph(name, model, node_type, **fields), models={model.key: model})
    return run, await output_image(store, run, "up")


def test_the_tiny_files_probe_as_spandrel_models_and_load(upscalers: dict[str, ModelSpec]) -> None:
    for spec in upscalers.values():
        assert (spec.type.value, spec.family.value, spec.format) == ("spandrel_image_to_image", "any",
                                                                      ModelFormat.CHECKPOINT)  # fmt: skip
    scales = {label: load_spandrel(spec, torch.device("cpu"), torch.float32).scale for label, spec in upscalers.items()}
    assert scales == {"x4": 4, "x2": 2, "x1": 1}
    # The .pth is a plain pickle of tensors: torch's weights-only unpickler reads it.
    assert "conv_first.weight" in read_state_dict(Path(upscalers["x2"].path))["params_ema"]


async def test_a_4x_model_upscales_4x(
    executor: InProcessExecutor, store: FileObjectStore, upscalers: dict[str, ModelSpec]
) -> None:
    source = gradient_image(32).resize((40, 24))
    run, image = await _upscale(executor, store, upscalers["x4"], source, tile_size=0)

    assert image.size == (160, 96)
    assert run.output("up")["width"] == 160 and run.output("up")["height"] == 96
    values = pixels(image)
    assert values.std() > 10  # a picture, not a flat colour
    plain = pixels(source.resize((160, 96), Image.Resampling.BICUBIC))
    assert np.abs(values - plain).mean() > 5  # the model made it, not a resize
    (record,) = run.of("up", "complete")[0].images
    assert not record.is_intermediate
    assert ("started", upscalers["x4"].key, None) in run.loads()
    assert [e.step for e in run.of("up", "progress")] == [1]  # one tile


async def test_tiling_keeps_the_size_and_reports_each_tile(
    executor: InProcessExecutor, store: FileObjectStore, upscalers: dict[str, ModelSpec]
) -> None:
    source = gradient_image(64).resize((72, 56))
    _, whole = await _upscale(executor, store, upscalers["x4"], source, tile_size=0)
    run, tiled = await _upscale(executor, store, upscalers["x4"], source, tile_size=32)

    assert tiled.size == whole.size == (288, 224)
    expected = len(tiles(72, 56, 32))
    assert expected > 1
    assert [e.step for e in run.of("up", "progress")] == list(range(1, expected + 1))
    # Tiles see less context at their edges, so pixels near seams differ a little; the picture is the same.
    difference = np.abs(pixels(tiled) - pixels(whole))
    assert 0 < difference.mean() < 20


def test_tiles_cover_the_image_with_the_minimum_overlap() -> None:
    boxes = tiles(100, 60, 48)
    assert {(box.left, box.right) for box in boxes} == {(0, 48), (26, 74), (52, 100)}
    assert {(box.top, box.bottom) for box in boxes} == {(0, 48), (12, 60)}
    assert all(box.overlap_left in (0, 22) and box.overlap_top in (0, 36) for box in boxes)
    assert tiles(30, 20, 512) == tiles(30, 20, 0)  # a tile larger than the image is the whole image
    # Tiles smaller than the overlap (InvokeAI asserts) overlap by half their size; every pixel is covered.
    for width, height, size in ((20, 12, 8), (100, 60, 48), (7, 5, 1), (64, 64, 21)):
        covered = np.zeros((height, width), dtype=bool)
        for box in tiles(width, height, size):
            assert box.bottom - box.top == min(size, height) and box.right - box.left == min(size, width)
            covered[box.top : box.bottom, box.left : box.right] = True
        assert covered.all(), (width, height, size)


async def test_autoscale_reaches_the_requested_scale(
    executor: InProcessExecutor, store: FileObjectStore, upscalers: dict[str, ModelSpec]
) -> None:
    source = gradient_image(24).resize((20, 16))
    # A 2× model run until 3× is reached (twice: 4×), then resized down to exactly 3×.
    run, image = await _upscale(executor, store, upscalers["x2"], source, "spandrel_image_to_image_autoscale",
                                scale=3.0, tile_size=0)  # fmt: skip
    assert image.size == (60, 48)
    assert len(run.of("up", "progress")) == 2  # two model runs of one tile each

    _, fitted = await _upscale(executor, store, upscalers["x4"], source, "spandrel_image_to_image_autoscale",
                               scale=1.5, fit_to_multiple_of_8=True)  # fmt: skip
    assert fitted.size == (24, 24)  # 30×24, floored to multiples of 8

    # A model that does not enlarge runs once and ignores the scale, as in InvokeAI.
    _, same = await _upscale(executor, store, upscalers["x1"], source, "spandrel_image_to_image_autoscale",
                             scale=4.0)  # fmt: skip
    assert same.size == (20, 16)


async def test_a_model_of_another_type_is_refused(executor: InProcessExecutor, store: FileObjectStore) -> None:
    name = await upload(store, gradient_image(16))
    lora = ModelSpec(name="not-an-upscaler", family=ModelFamily.SD1, format=ModelFormat.CHECKPOINT, path="/nowhere",
                     type=ModelType.LORA)  # fmt: skip
    with pytest.raises(GenerationFailed, match="not a spandrel_image_to_image model"):
        await run_session(executor, _graph(name, lora), models={lora.key: lora})
