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
step that fits stays `denoise_latents`.

Upscale re-diffusion passes (services/enfugue_upscale.py) are chunked the same way, with the same window `size`,
when the pass's image is wider or taller than it, but with their own stride, as Enfugue 0.2 computes it for pass
j (0-based): `upscale_diffusion_chunking_size` (one value or one per pass; default size // 4), and when
`upscale_diffusion_scale_chunking_size` (default true) min(value × (j + 1), size // 2), so each pass slides its
windows further, never by more than half a window (Enfugue caps it there against discontinuities; without
scaling the value is used as it is). The stride becomes the overlap as above; 0 turns chunking off for that pass.
`upscale_diffusion_chunking_blur` / `_scale_chunking_blur` grow the same way in Enfugue and, like
`chunking_blur`, are validated and kept but do not change the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import GenerationRequest, UpscalePass
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
    return _layout(size, size // 8 if request.chunking_size is None else request.chunking_size)


def upscale_stride(step: UpscalePass, number: int, size: int) -> int:
    """Enfugue's chunking stride for upscale pass `number` (0-based) in a window of `size` pixels."""
    stride = size // 4 if step.chunking_size is None else step.chunking_size
    return min(stride * (number + 1), size // 2) if step.scale_chunking_size else stride


def upscale_denoise(step: UpscalePass, number: int, size: int, width: int, height: int) -> tuple[str, dict[str, Any]]:
    """The node type and tile fields of upscale pass `number`'s denoise of a `width` × `height` image: the tiled
    node when the image exceeds the window `size` (0: no window) and the pass's stride is not 0, else
    `denoise_latents`."""
    chunking = _layout(size, upscale_stride(step, number, size)) if size else None
    if chunking is None or (width <= size and height <= size):
        return "denoise_latents", {}
    return TILED_NODE, chunking.fields()


def _layout(size: int, stride: int) -> Chunking | None:
    """Tiles of `size` sliding by at most `stride` pixels; None when `stride` is 0 or the window a single cell."""
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
