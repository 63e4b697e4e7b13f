"""`tiled_multi_diffusion_denoise_latents`: denoise_latents' inputs (less the adapters) over overlapping tiles.

Inputs are read exactly as `denoise_latents` reads them (the shared helpers of invocations/latents.py); the
MultiDiffusion itself is nodes/tiled.py. ControlNet images are fitted to the whole canvas and cut per tile, as
InvokeAI does; `denoise_mask` (this server's addition) masks the whole latent between steps as denoise_latents'
does, and a 9-channel inpainting UNet reads its masked latents cut per tile.
"""

from __future__ import annotations

import torch

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.graph.outputs import LatentsOutput
from serve_app.domain.graph.tiled_nodes import TiledMultiDiffusionDenoiseLatents
from serve_app.domain.models import ModelType
from serve_app.inference.graph_context import NodeContext
from serve_app.inference.invocations._common import lora_weights, model_of, required
from serve_app.inference.invocations.control import control_inputs
from serve_app.inference.invocations.latents import (
    _PROMPT_NODES,
    _conditioning,
    _denoise_mask,
    _latents_output,
    _prompt_node_of,
    _tensor,
)
from serve_app.inference.nodes import preview
from serve_app.inference.nodes.latents import LATENT_SCALE
from serve_app.inference.nodes.tiled import tiled_denoise


def tiled_multi_diffusion_denoise_latents(
    node: TiledMultiDiffusionDenoiseLatents, context: NodeContext
) -> LatentsOutput:
    """txt2img from `noise`, img2img from `latents`, inpaint with `denoise_mask`, tile by tile; progress (with a
    preview of the whole latent) after every step, cancel checked before every tile."""
    unet_field = required(node, "unet", node.unet)
    if unet_field.seamless_axes or unet_field.freeu_config:
        raise NotImplementedError("Seamless tiling and FreeU are not supported by this server")
    spec = model_of(context, unet_field.unet, ModelType.MAIN)
    scheduler_spec = model_of(context, unet_field.scheduler, ModelType.MAIN)
    positive = _conditioning(context, node.positive_conditioning, "positive_conditioning")
    negative = _conditioning(context, node.negative_conditioning, "negative_conditioning")
    prompt_node = _PROMPT_NODES.get(spec.family, "compel")
    if _prompt_node_of(positive) != prompt_node:
        raise InvalidRequest(f"Model {spec.name} ({spec.family}) needs conditioning from {prompt_node} nodes")
    seed = next((f.seed for f in (node.noise, node.latents) if f is not None and f.seed is not None), 0)

    def on_step(done: int, total: int, latents: torch.Tensor) -> None:
        context.progress(done, total, preview=preview(latents, spec.family))

    components = context.components
    noise_tensor, latents_tensor = _tensor(context, node.noise), _tensor(context, node.latents)
    reference = noise_tensor if noise_tensor is not None else latents_tensor
    control = []
    if reference is not None:  # else tiled_denoise() refuses the call itself
        size = (reference.shape[3] * LATENT_SCALE, reference.shape[2] * LATENT_SCALE)
        control = control_inputs(context, node.control, spec, node.steps, *size)
    with components.unet_with_loras(spec, lora_weights(context, unet_field.loras)) as unet:
        result = tiled_denoise(
            unet,
            components.scheduler(scheduler_spec, node.scheduler, seed=seed),
            positive,
            negative,
            noise=noise_tensor,
            latents=latents_tensor,
            tile_width=node.tile_width,
            tile_height=node.tile_height,
            tile_overlap=node.tile_overlap,
            steps=node.steps,
            cfg_scale=node.cfg_scale,
            cfg_rescale_multiplier=node.cfg_rescale_multiplier,
            denoising_start=node.denoising_start,
            denoising_end=node.denoising_end,
            denoise_mask=_denoise_mask(context, node.denoise_mask),
            seed=seed,
            on_step=on_step,
            should_stop=context.should_stop,
            control=control,
        )
    return _latents_output(context, result)
