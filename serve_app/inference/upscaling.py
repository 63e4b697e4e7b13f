"""Spandrel image-to-image models (ESRGAN, Real-ESRGAN, ...): loading them safely and running them tile by tile.

Loading reads the weights ourselves (safetensors, or a pickle through torch's weights-only unpickler) and hands
spandrel only the state dict, which it recognises by its tensor names. Tiling follows InvokeAI's
`spandrel_image_to_image`: tiles of `tile_size` with at least 20 px overlap, spread evenly over the image; each
upscaled tile is pasted over its neighbours, keeping half of the overlap on its top and left side.
"""

from __future__ import annotations

import importlib
import math
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from serve_app.domain.errors import GenerationFailed
from serve_app.domain.models import ModelSpec

MIN_OVERLAP = 20
_PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


@dataclass(frozen=True)
class Tile:
    """A tile's box in the image (top, bottom, left, right) and how far it overlaps its neighbours on each side."""

    top: int
    bottom: int
    left: int
    right: int
    overlap_top: int = 0
    overlap_left: int = 0

    def scaled(self, scale: int) -> Tile:
        return Tile(self.top * scale, self.bottom * scale, self.left * scale, self.right * scale,
                    self.overlap_top * scale, self.overlap_left * scale)  # fmt: skip


def _starts(length: int, tile: int, min_overlap: int) -> list[int]:
    """Where the tiles of one axis start: as few as cover `length` with `min_overlap`, spread evenly (the
    last one ends at the edge), as InvokeAI's `calc_tiles_min_overlap`. `tile` is at most `length`; a tile
    too small for the overlap (InvokeAI refuses those) overlaps by half its size instead."""
    overlap = min(min_overlap, tile // 2)
    count = max(1, math.ceil((length - overlap) / (tile - overlap)))
    return [(index * (length - tile)) // (count - 1) if count > 1 else 0 for index in range(count)]


def tiles(width: int, height: int, tile_size: int, min_overlap: int = MIN_OVERLAP) -> list[Tile]:
    """The tiles covering a `width`×`height` image, left to right then top to bottom; one tile when
    `tile_size` is 0 (tiling off)."""
    if tile_size <= 0:
        return [Tile(0, height, 0, width)]
    tile_w, tile_h = min(tile_size, width), min(tile_size, height)
    result = []
    rows, columns = _starts(height, tile_h, min_overlap), _starts(width, tile_w, min_overlap)
    for row, top in enumerate(rows):
        for column, left in enumerate(columns):
            above = rows[row - 1] + tile_h - top if row else 0
            before = columns[column - 1] + tile_w - left if column else 0
            result.append(Tile(top, top + tile_h, left, left + tile_w, max(0, above), max(0, before)))
    return result


@dataclass(frozen=True)
class SpandrelModel:
    """A loaded spandrel image model on one device and dtype. A dataclass holding its torch module, so the model
    cache can measure it; `scale` is how much one run enlarges an image."""

    module: torch.nn.Module
    descriptor: Any
    device: torch.device
    dtype: torch.dtype

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    def run(self, image: torch.Tensor) -> torch.Tensor:
        """(1, C, H, W) in [0, 1] -> (1, C, H·scale, W·scale) in [0, 1]."""
        with torch.inference_mode():
            result: torch.Tensor = self.descriptor(image.to(device=self.device, dtype=self.dtype))
        return result


def load_spandrel(spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> SpandrelModel:
    """Load an image-to-image model; GenerationFailed when the file cannot be read or is no image model spandrel
    knows. Half precision only where the architecture supports it (float32 otherwise)."""
    spandrel = _spandrel()
    try:
        state = read_state_dict(Path(spec.path))
        descriptor = spandrel.ModelLoader().load_from_state_dict(spandrel.canonicalize_state_dict(state))
    except (OSError, ValueError, RuntimeError, KeyError, spandrel.UnsupportedModelError) as exc:
        raise GenerationFailed(f"Could not load upscaling model {spec.name}: {exc}",
                               error_type="ModelLoadError") from exc  # fmt: skip
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise GenerationFailed(f"Model {spec.name} is a {descriptor.purpose} model, not an image-to-image model",
                               error_type="ModelLoadError")  # fmt: skip
    supported = {torch.float16: descriptor.supports_half, torch.bfloat16: descriptor.supports_bfloat16}
    dtype = dtype if supported.get(dtype, True) else torch.float32
    descriptor.to(device=device, dtype=dtype)
    descriptor.eval()
    return SpandrelModel(descriptor.model, descriptor, device, dtype)


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a model file; pickles go through torch's weights-only unpickler (no code runs)."""
    if path.suffix == ".safetensors":
        return dict(load_file(str(path), device="cpu"))
    if path.suffix in _PICKLE_SUFFIXES:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(loaded, dict):
            raise ValueError(f"{path.name} holds a {type(loaded).__name__}, not a state dict")
        return loaded
    raise ValueError(f"{path.name}: expected a .safetensors or .pth file")


def upscale(
    image: Image.Image,
    model: SpandrelModel,
    tile_size: int,
    on_tile: Callable[[int, int], None] | None = None,
) -> Image.Image:
    """`image` (RGB) run through `model` tile by tile; `on_tile(done, total)` after each tile (it may raise to
    stop, e.g. when the job is canceled)."""
    source = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    scale = model.scale
    output = torch.zeros((image.height * scale, image.width * scale, 3), dtype=torch.uint8)
    boxes = tiles(image.width, image.height, tile_size)
    for done, tile in enumerate(boxes, start=1):
        result = model.run(source[:, :, tile.top : tile.bottom, tile.left : tile.right])
        pixels = (result[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(dtype=torch.uint8, device="cpu")
        big = tile.scaled(scale)
        # Half the overlap stays with the earlier tile: the edges of a tile are where the model sees least.
        top, left = big.overlap_top // 2, big.overlap_left // 2
        output[big.top + top : big.bottom, big.left + left : big.right] = pixels[top:, left:]
        if on_tile is not None:
            on_tile(done, len(boxes))
    return Image.fromarray(output.numpy())


def _spandrel() -> Any:
    """spandrel, imported once. Its package imports every architecture it knows, and two of them (LaMa,
    RestoreFormer, neither of which runs here) import torchvision at module level. This environment has no
    torchvision built for its CPU torch, so while spandrel imports they get a stand-in whose functions refuse
    to run; the stand-in is removed again at once, so nothing else ever sees a torchvision module."""
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    try:
        importlib.import_module("torchvision.transforms.functional")
    except ImportError:
        pass
    else:
        return importlib.import_module("spandrel")
    stand_ins = _torchvision_stand_in()
    sys.modules.update(stand_ins)
    try:
        return importlib.import_module("spandrel")
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    def missing(*args: Any, **kwargs: Any) -> Any:
        raise GenerationFailed("This architecture needs torchvision, which is not installed",
                               error_type="ModelLoadError")  # fmt: skip

    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    root, transforms, functional = (types.ModuleType(name) for name in names)
    functional.rotate = functional.normalize = missing  # type: ignore[attr-defined]
    functional.InterpolationMode = types.SimpleNamespace(BILINEAR="bilinear")  # type: ignore[attr-defined]
    root.transforms, transforms.functional = transforms, functional  # type: ignore[attr-defined]
    return dict(zip(names, (root, transforms, functional), strict=True))
