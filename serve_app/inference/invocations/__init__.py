"""One implementation per node type: `IMPLEMENTATIONS[node.type](node, context)` -> the node's output.

The glue between the node schemas (`serve_app.domain.graph`), the diffusion operations
(`serve_app.inference.nodes`) and the runtime (`NodeContext`). Primitives (values, collect, iterate,
core_metadata) are the domain's own `PRIMITIVES`; the rest are split by family:
`models` (loaders, clip_skip, LoRAs), `prompts`, `latents` (noise, denoise, VAE, masks), `images`,
`control` (ControlNet, the canny detector, img_lerp), `upscaling` (spandrel image-to-image), `tiled`
(MultiDiffusion denoising).

Not supported (a clear NotImplementedError when a graph uses them): IP-Adapter / T2I-Adapter inputs,
regional (several or masked) conditionings, seamless tiling, FreeU.
"""

from __future__ import annotations

from serve_app.domain.graph.base import BaseInvocation, BaseInvocationOutput
from serve_app.domain.graph.primitives import PRIMITIVES
from serve_app.inference.graph_context import NodeContext
from serve_app.inference.invocations import (
    composite,
    control,
    images,
    latents,
    masks,
    models,
    prompts,
    refiner,
    tiled,
    upscaling,
)
from serve_app.inference.invocations._common import Implementation, typed

__all__ = ["IMPLEMENTATIONS", "Implementation"]


def _primitive(node_type: str) -> Implementation:
    function = PRIMITIVES[node_type]

    def run(node: BaseInvocation, context: NodeContext) -> BaseInvocationOutput:
        return function(node)

    return run


IMPLEMENTATIONS: dict[str, Implementation] = {
    **{node_type: _primitive(node_type) for node_type in PRIMITIVES},
    "main_model_loader": typed(models.main_model_loader),
    "sdxl_model_loader": typed(models.sdxl_model_loader),
    "vae_loader": typed(models.vae_loader),
    "clip_skip": typed(models.clip_skip),
    "lora_selector": typed(models.lora_selector),
    "lora_loader": typed(models.lora_loader),
    "sdxl_lora_loader": typed(models.sdxl_lora_loader),
    "lora_collection_loader": typed(models.lora_collection_loader),
    "sdxl_lora_collection_loader": typed(models.sdxl_lora_collection_loader),
    "compel": typed(prompts.compel),
    "sdxl_compel_prompt": typed(prompts.sdxl_compel_prompt),
    "sdxl_refiner_model_loader": typed(refiner.sdxl_refiner_model_loader),
    "sdxl_refiner_compel_prompt": typed(refiner.sdxl_refiner_compel_prompt),
    "noise": typed(latents.noise),
    "denoise_latents": typed(latents.denoise_latents),
    "l2i": typed(latents.l2i),
    "i2l": typed(latents.i2l),
    "create_denoise_mask": typed(latents.create_denoise_mask_),
    "create_gradient_mask": typed(latents.create_gradient_mask_),
    "img_resize": typed(images.img_resize),
    "save_image": typed(images.save_image),
    "image": typed(images.image),
    "blank_image": typed(composite.blank_image),
    "img_crop": typed(composite.img_crop),
    "img_paste": typed(composite.img_paste),
    "tomask": typed(composite.tomask),
    "expand_mask_with_fade": typed(masks.expand_mask_with_fade),
    "controlnet": typed(control.controlnet),
    "canny_edge_detection": typed(control.canny_edge_detection),
    "canny_image_processor": typed(control.canny_image_processor),
    "img_lerp": typed(control.img_lerp),
    "spandrel_image_to_image": typed(upscaling.spandrel_image_to_image),
    "spandrel_image_to_image_autoscale": typed(upscaling.spandrel_image_to_image_autoscale),
    "tiled_multi_diffusion_denoise_latents": typed(tiled.tiled_multi_diffusion_denoise_latents),
}
