"""MultiDiffusion (https://arxiv.org/abs/2302.08113): InvokeAI's `tiled_multi_diffusion_denoise_latents` math.

A canvas larger than the model's size is covered by overlapping latent tiles laid out as InvokeAI's
`calc_tiles_min_overlap` does (the fewest tiles of exactly the tile size whose neighbours overlap by at least
`min_overlap`, spread evenly; a tile larger than the canvas shrinks to it). At every step the UNet runs on each
tile and the tiles' noise predictions are averaged with weights that ramp linearly down across the overlap with
each neighbour (never to 0, and not at the canvas edge, which only one tile covers); then one scheduler step runs
on the whole latent. Everything else (start noise, masks, guidance, progress, cancel) is `denoise`'s own loop, so a
canvas that fits in one tile denoises exactly as `denoise_latents` does.

Where InvokeAI differs: it steps a copy of the scheduler per tile and averages the stepped latents with equal
weights. Blending the predictions instead keeps one scheduler state (stateful multistep schedulers stay correct)
and is the same thing for first-order schedulers, whose step is affine in the prediction.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from serve_app.domain.errors import InvalidRequest, JobCanceled
from serve_app.inference.nodes.latents import LATENT_SCALE, StopCheck, UNetInputs, UNetPass, denoise, unet_pass
from serve_app.inference.nodes.prompts import Conditioning


@dataclass(frozen=True)
class Tile:
    """A tile in latent cells (`bottom`/`right` exclusive), with how far each neighbour overlaps it (0 on a side
    at the canvas edge)."""

    top: int
    bottom: int
    left: int
    right: int
    overlap_top: int = 0
    overlap_bottom: int = 0
    overlap_left: int = 0
    overlap_right: int = 0


def _spans(size: int, tile: int, min_overlap: int) -> list[tuple[int, int, int, int]]:
    """(start, end, overlap before, overlap after) along one axis, as `calc_tiles_min_overlap` lays them out."""
    if size <= tile:
        return [(0, size, 0, 0)]
    count = math.ceil((size - min_overlap) / (tile - min_overlap))
    starts = [index * (size - tile) // (count - 1) for index in range(count)]
    spans = []
    for index, start in enumerate(starts):
        before = starts[index - 1] + tile - start if index > 0 else 0
        after = start + tile - starts[index + 1] if index + 1 < count else 0
        spans.append((start, start + tile, before, after))
    return spans


def tile_layout(height: int, width: int, tile_height: int, tile_width: int, min_overlap: int) -> list[Tile]:
    """The tiles covering a height × width latent, left to right then top to bottom (all sizes in latent cells);
    InvalidRequest unless 0 <= min_overlap < both tile sides."""
    if tile_height <= 0 or tile_width <= 0:
        raise InvalidRequest(f"tiles must be at least one latent cell, got {tile_width}x{tile_height}")
    if not 0 <= min_overlap < min(tile_height, tile_width):
        raise InvalidRequest(f"tile_overlap ({min_overlap * LATENT_SCALE}) must be less than the tile size "
                             f"({tile_width * LATENT_SCALE}x{tile_height * LATENT_SCALE})",
                             field="tile_overlap")  # fmt: skip
    return [
        Tile(top, bottom, left, right, above, below, before, after)
        for top, bottom, above, below in _spans(height, tile_height, min_overlap)
        for left, right, before, after in _spans(width, tile_width, min_overlap)
    ]


def _ramp(length: int, before: int, after: int) -> torch.Tensor:
    # Cell p of an overlap of n cells weighs (p + 1) / (n + 1): two neighbours' weights sum to 1 across it.
    position = torch.arange(length, dtype=torch.float32)
    weight = torch.ones(length)
    if before:
        weight = torch.minimum(weight, (position + 1) / (before + 1))
    if after:
        weight = torch.minimum(weight, (length - position) / (after + 1))
    return weight


def tile_weights(tile: Tile) -> torch.Tensor:
    """The blending weight of each cell of `tile`, [1, 1, h, w] float32, in (0, 1]."""
    rows = _ramp(tile.bottom - tile.top, tile.overlap_top, tile.overlap_bottom)
    columns = _ramp(tile.right - tile.left, tile.overlap_left, tile.overlap_right)
    return torch.outer(rows, columns)[None, None]


def _cropped(inputs: UNetInputs, tile: Tile) -> UNetInputs:
    """The inputs of one tile: the inpainting channels cut to it, each ControlNet's image (pixels) cut to it."""
    extra = None if inputs.extra is None else inputs.extra[:, :, tile.top : tile.bottom, tile.left : tile.right]
    pixels = (slice(tile.top * LATENT_SCALE, tile.bottom * LATENT_SCALE),
              slice(tile.left * LATENT_SCALE, tile.right * LATENT_SCALE))  # fmt: skip
    control = [dataclasses.replace(item, image=item.image[:, :, pixels[0], pixels[1]]) for item in inputs.control]
    return dataclasses.replace(inputs, extra=extra, control=control)


def multi_diffusion(tiles: Sequence[Tile], should_stop: StopCheck | None = None) -> UNetPass:
    """A `denoise` UNet pass that runs the UNet per tile and blends the predictions; `should_stop()` is polled
    before every tile (JobCanceled when it answers True)."""
    weights = [tile_weights(tile) for tile in tiles]

    def predict(
        unet: Any, model_input: torch.Tensor, t: torch.Tensor, inputs: UNetInputs, step: int, total: int
    ) -> torch.Tensor:
        merged: torch.Tensor | None = None
        total_weight = torch.zeros((1, 1, *model_input.shape[2:]), device=model_input.device, dtype=torch.float32)
        for tile, weight in zip(tiles, weights, strict=True):
            if should_stop is not None and should_stop():
                raise JobCanceled()
            window = (slice(None), slice(None), slice(tile.top, tile.bottom), slice(tile.left, tile.right))
            prediction = unet_pass(unet, model_input[window], t, _cropped(inputs, tile), step, total)
            if merged is None:
                merged = torch.zeros((*prediction.shape[:2], *model_input.shape[2:]), device=prediction.device,
                                     dtype=torch.float32)  # fmt: skip
            weight = weight.to(device=prediction.device)
            merged[window] += prediction.float() * weight
            total_weight[window] += weight
        assert merged is not None, "a layout has at least one tile"
        return (merged / total_weight).to(dtype=model_input.dtype)

    return predict


def tiled_denoise(
    unet: Any,
    scheduler: Any,
    positive: Conditioning,
    negative: Conditioning,
    *,
    noise: torch.Tensor | None,
    latents: torch.Tensor | None = None,
    tile_width: int,
    tile_height: int,
    tile_overlap: int,
    should_stop: StopCheck | None = None,
    **options: Any,
) -> Any:
    """`denoise` over tiles of tile_width × tile_height pixels overlapping by at least `tile_overlap` pixels (all
    multiples of 8); `options` are `denoise`'s (steps, cfg_scale, masks, control, on_step, ...)."""
    reference = latents if latents is not None else noise
    if reference is None:
        raise InvalidRequest("denoise needs noise, latents or both", field="noise")
    tiles = tile_layout(reference.shape[2], reference.shape[3], tile_height // LATENT_SCALE,
                        tile_width // LATENT_SCALE, tile_overlap // LATENT_SCALE)  # fmt: skip
    return denoise(unet, scheduler, positive, negative, noise=noise, latents=latents, should_stop=should_stop,
                   predict=multi_diffusion(tiles, should_stop), **options)  # fmt: skip
