"""`tiled_multi_diffusion_denoise_latents`: denoise_latents' inputs (less the adapters) over overlapping tiles.

Inputs are read exactly as `denoise_latents` reads them (the shared helpers of invocations/latents.py); the
MultiDiffusion itself is nodes/tiled.py. ControlNet images are fitted to the whole canvas and cut per tile, as
InvokeAI does; `denoise_mask` (this server's addition) masks the whole latent between steps as denoise_latents'
does, and a 9-channel inpainting UNet reads its masked latents cut per tile.
"""

from __future__ import annotations

import functools

from serve_app.domain.graph.outputs import LatentsOutput
from serve_app.domain.graph.tiled_nodes import TiledMultiDiffusionDenoiseLatents
from serve_app.inference.graph_context import NodeContext
from serve_app.inference.invocations.latents import run_denoise
from serve_app.inference.nodes.tiled import tiled_denoise


def tiled_multi_diffusion_denoise_latents(
    node: TiledMultiDiffusionDenoiseLatents, context: NodeContext
) -> LatentsOutput:
    """txt2img from `noise`, img2img from `latents`, inpaint with `denoise_mask`, tile by tile; progress (with a
    preview of the whole latent) after every step, cancel checked before every tile."""
    tiled = functools.partial(
        tiled_denoise, tile_width=node.tile_width, tile_height=node.tile_height, tile_overlap=node.tile_overlap
    )
    return run_denoise(node, context, tiled)
