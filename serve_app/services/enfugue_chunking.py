"""Enfugue's sliding-window ("chunked") diffusion (enfugue-api.md §5.2 `chunking_size`, `chunking_blur`) as
InvokeAI's `tiled_multi_diffusion_denoise_latents`.

Enfugue diffuses a canvas larger than `size` (the request's, else the model's native size) in windows of `size`
that slide by `chunking_size` pixels (default size // 8; 0 turns chunking off) and blends them. InvokeAI's node
describes the same layout by its tile and the overlap of neighbouring tiles, so: tile = size (a multiple of 8,
rounded down), tile_overlap = size - chunking_size rounded down to a multiple of 8 (so the windows slide by at most
`chunking_size`), at least 8 (the node's minimum; a stride of `size` or more still overlaps by one latent cell).
The node lays its tiles out evenly, so the real stride may be a little smaller than asked, never larger.

`chunking_blur` (default size // 8) is Enfugue's feather at window edges. The node has no such input: it always
feathers each tile linearly across its whole overlap with its neighbours (inference/nodes/tiled.py), which is
Enfugue's blending for a blur as wide as the overlap. The value is kept (validated, and in each image's metadata)
but does not change the result.

Every diffusion step of a built graph (a sample's denoise, a canvas region's, a gap fill's, the final outpaint's,
and the refiner pass that continues one) whose size exceeds `size` in width or height becomes the tiled node; a
step that fits stays `denoise_latents`. Upscale re-diffusion passes are not chunked (their
`upscale_diffusion_*chunking*` keys stay accepted and ignored).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import GenerationRequest
from serve_app.services.enfugue_refiner import DiffusionStep, single_region_steps

TILED_NODE = "tiled_multi_diffusion_denoise_latents"
_MULTIPLE = 8  # the VAE's scale: tiles and overlaps are whole latent cells


@dataclass(frozen=True)
class Chunking:
    """The tiled node's layout for one request: tile sides and minimum overlap in pixels; `size` is the window
    (steps larger than it in either side are chunked)."""

    size: int
    tile: int
    overlap: int

    def fields(self) -> dict[str, Any]:
        return {"tile_width": self.tile, "tile_height": self.tile, "tile_overlap": self.overlap}


def check_chunking(request: GenerationRequest) -> None:
    """InvalidRequest (400) for a negative `chunking_size` or `chunking_blur` (a preset's values included)."""
    for name in ("chunking_size", "chunking_blur"):
        value = getattr(request, name)
        if value is not None and value < 0:
            raise InvalidRequest(f"`{name}` must be 0 or more, got {value}", field=name)


def chunking_of(request: GenerationRequest, native_size: int) -> Chunking | None:
    """The layout for a request whose model is `native_size` pixels natively, or None when chunking is off
    (`chunking_size` 0) or the window is a single latent cell."""
    check_chunking(request)
    size = request.size or native_size
    stride = size // 8 if request.chunking_size is None else request.chunking_size
    tile = size // _MULTIPLE * _MULTIPLE
    if stride == 0 or tile <= _MULTIPLE:
        return None
    overlap = (size - stride) // _MULTIPLE * _MULTIPLE
    return Chunking(size=size, tile=tile, overlap=min(max(overlap, _MULTIPLE), tile - _MULTIPLE))


def chunk_steps(
    nodes: dict[str, dict[str, Any]],
    request: GenerationRequest,
    native_size: int,
    steps: Sequence[DiffusionStep] | None = None,
) -> list[str]:
    """Make the denoise nodes of the `steps` larger than the window (and their refiner passes) the tiled node;
    returns their ids. `steps`: a canvas region graph's; None: the single-region graph's samples."""
    chunking = chunking_of(request, native_size)
    if chunking is None:
        return []
    steps = single_region_steps(nodes, request) if steps is None else steps
    chunked = []
    for step in steps:
        if step.width <= chunking.size and step.height <= chunking.size:
            continue
        for node_id in (step.denoise, f"refiner_{step.denoise}"):
            node = nodes.get(node_id)
            if node is not None and node["type"] == "denoise_latents":
                node.update(type=TILED_NODE, **chunking.fields())
                chunked.append(node_id)
    return chunked
