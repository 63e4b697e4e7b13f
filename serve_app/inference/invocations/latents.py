"""Noise, denoising, VAE decode/encode and the inpaint-mask nodes.

Tensors travel between nodes by name (`NodeContext.put/get`): noise, latents and mask tensors as `Tensor_<uuid>`,
all CPU float32 with a batch of 1 (the `serve_app.inference.nodes` conventions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.graph.fields import ConditioningField, DenoiseMaskField, ImageField, LatentsField
from serve_app.domain.graph.latent_nodes import (
    CreateDenoiseMaskInvocation,
    CreateGradientMaskInvocation,
    DenoiseLatentsInvocation,
    ImageToLatentsInvocation,
    LatentsToImageInvocation,
    NoiseInvocation,
)
from serve_app.domain.graph.outputs import (
    DenoiseMaskOutput,
    GradientMaskOutput,
    ImageOutput,
    LatentsOutput,
    NoiseOutput,
)
from serve_app.domain.graph.tiled_nodes import TiledMultiDiffusionDenoiseLatents
from serve_app.domain.images import ImageCategory
from serve_app.domain.models import ModelFamily, ModelType
from serve_app.inference.graph_context import NodeContext
from serve_app.inference.invocations._common import TENSOR, image_output, load_vae, lora_weights, model_of, required
from serve_app.inference.invocations.control import control_inputs
from serve_app.inference.nodes import (
    Conditioning,
    DenoiseMask,
    create_denoise_mask,
    create_gradient_mask,
    decode,
    denoise,
    encode,
    make_noise,
    preview,
)
from serve_app.inference.nodes.latents import LATENT_SCALE

_INPAINT_UNET_CHANNELS = 9
# The prompt node whose conditioning each family's UNet takes (others: `compel`). The SDXL base UNet reads six
# micro-conditioning numbers, the refiner's five (the aesthetic score in place of the target size).
_PROMPT_NODES = {ModelFamily.SDXL: "sdxl_compel_prompt", ModelFamily.SDXL_REFINER: "sdxl_refiner_compel_prompt"}
_REFINER_TIME_IDS = 5


def _prompt_node_of(conditioning: Conditioning) -> str:
    if conditioning.add_time_ids is None:
        return "compel"
    refiner = conditioning.add_time_ids.shape[-1] == _REFINER_TIME_IDS
    return "sdxl_refiner_compel_prompt" if refiner else "sdxl_compel_prompt"


def _latents_output(context: NodeContext, latents: torch.Tensor, seed: int | None = None) -> LatentsOutput:
    name = context.put(latents, TENSOR)
    return LatentsOutput(
        latents=LatentsField(latents_name=name, seed=seed),
        width=latents.shape[3] * LATENT_SCALE,
        height=latents.shape[2] * LATENT_SCALE,
    )


def noise(node: NoiseInvocation, context: NodeContext) -> NoiseOutput:
    tensor = make_noise(node.seed, node.width, node.height, use_cpu=node.use_cpu, device=context.device)
    name = context.put(tensor, TENSOR)
    return NoiseOutput(noise=LatentsField(latents_name=name, seed=node.seed), width=node.width, height=node.height)


def _conditioning(
    context: NodeContext, value: ConditioningField | list[ConditioningField] | None, field: str
) -> Conditioning:
    """The one conditioning of a prompt input (the UI sends a one-element collection)."""
    items = value if isinstance(value, list) else [] if value is None else [value]
    if not items:
        raise InvalidRequest(f"denoise_latents needs a {field}", field=field)
    if len(items) > 1 or items[0].mask is not None:
        raise NotImplementedError("Regional prompts (several or masked conditionings) are not supported")
    conditioning = context.get(items[0].conditioning_name)
    if not isinstance(conditioning, Conditioning):
        raise InvalidRequest(f"{items[0].conditioning_name} is not a conditioning", field=field)
    return conditioning


def _reject_adapters(node: DenoiseLatentsInvocation) -> None:
    for field in ("ip_adapter", "t2i_adapter"):
        value = getattr(node, field)
        if value is not None and value != []:
            raise NotImplementedError(f"denoise_latents.{field} (IP-Adapter/T2I-Adapter) is not supported")


def _denoise_mask(context: NodeContext, field: DenoiseMaskField | None) -> DenoiseMask | None:
    if field is None:
        return None
    masked = context.get(field.masked_latents_name) if field.masked_latents_name is not None else None
    return DenoiseMask(mask=context.get(field.mask_name), masked_latents=masked, gradient=field.gradient)


def _store_mask(context: NodeContext, mask: DenoiseMask) -> DenoiseMaskField:
    masked = context.put(mask.masked_latents, TENSOR) if mask.masked_latents is not None else None
    return DenoiseMaskField(
        mask_name=context.put(mask.mask, TENSOR), masked_latents_name=masked, gradient=mask.gradient
    )


def _tensor(context: NodeContext, field: LatentsField | None) -> Any:
    return None if field is None else context.get(field.latents_name)


def denoise_latents(node: DenoiseLatentsInvocation, context: NodeContext) -> LatentsOutput:
    """txt2img from `noise`; img2img from `latents` (noised to `denoising_start`); inpaint with `denoise_mask`.

    The UNet handle's LoRAs are merged for the call; progress (with a latent-space preview) is reported after
    every UNet pass, and the call stops at the next pass once the item is canceled."""
    _reject_adapters(node)
    return run_denoise(node, context, denoise)


# What denoise_latents and tiled_multi_diffusion_denoise_latents share: a UNet handle, two conditionings, noise
# and/or latents, ControlNets, the schedule, a mask.
Denoising = DenoiseLatentsInvocation | TiledMultiDiffusionDenoiseLatents


def run_denoise(node: Denoising, context: NodeContext, run: Callable[..., torch.Tensor]) -> LatentsOutput:
    """Read a denoising node's inputs, call `run` (nodes.latents.denoise, or a tiled variant with its tile
    options bound) with the UNet (LoRAs merged) and its scheduler, and store the resulting latents."""
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
    # InvokeAI seeds the scheduler from the noise's seed, else the latents', else 0.
    seed = next((f.seed for f in (node.noise, node.latents) if f is not None and f.seed is not None), 0)
    cfg_scale: float | Sequence[float] = node.cfg_scale

    def on_step(done: int, total: int, latents: torch.Tensor) -> None:
        context.progress(done, total, preview=preview(latents, spec.family))

    components = context.components
    noise_tensor, latents_tensor = _tensor(context, node.noise), _tensor(context, node.latents)
    reference = noise_tensor if noise_tensor is not None else latents_tensor
    control = []
    if reference is not None:  # else `run` refuses the call itself
        size = (reference.shape[3] * LATENT_SCALE, reference.shape[2] * LATENT_SCALE)
        control = control_inputs(context, node.control, spec, node.steps, *size)
    with components.unet_with_loras(spec, lora_weights(context, unet_field.loras)) as unet:
        result = run(
            unet,
            components.scheduler(scheduler_spec, node.scheduler, seed=seed),
            positive,
            negative,
            noise=noise_tensor,
            latents=latents_tensor,
            steps=node.steps,
            cfg_scale=cfg_scale,
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


def l2i(node: LatentsToImageInvocation, context: NodeContext) -> ImageOutput:
    """Decode (untiled: `tiled`/`tile_size` are accepted and ignored) and store the image with the graph's
    metadata, on the node's board."""
    latents = context.get(required(node, "latents", node.latents).latents_name)
    vae = load_vae(context, required(node, "vae", node.vae))
    image = decode(vae, latents, fp32=node.fp32)
    return image_output(context, node, image)


def i2l(node: ImageToLatentsInvocation, context: NodeContext) -> LatentsOutput:
    """Encode to the latent distribution's mode (deterministic; InvokeAI samples it unseeded)."""
    image = context.load_image(required(node, "image", node.image))
    vae = load_vae(context, required(node, "vae", node.vae))
    return _latents_output(context, encode(vae, image, fp32=node.fp32))


def create_denoise_mask_(node: CreateDenoiseMaskInvocation, context: NodeContext) -> DenoiseMaskOutput:
    """A binary-style mask; with `image`, also its masked latents (what 9-channel inpainting UNets read)."""
    mask_image = context.load_image(required(node, "mask", node.mask))
    image = context.load_image(node.image) if node.image is not None else None
    vae = load_vae(context, required(node, "vae", node.vae)) if image is not None else None
    mask = create_denoise_mask(mask_image, vae=vae, image=image, fp32=node.fp32)
    return DenoiseMaskOutput(denoise_mask=_store_mask(context, mask))


def _is_inpaint_model(context: NodeContext, node: CreateGradientMaskInvocation) -> bool:
    if node.unet is None or node.vae is None or node.image is None:
        return False
    unet = context.components.unet(model_of(context, node.unet.unet, ModelType.MAIN))
    return int(unet.config.in_channels) == _INPAINT_UNET_CHANNELS


def create_gradient_mask_(node: CreateGradientMaskInvocation, context: NodeContext) -> GradientMaskOutput:
    """A soft-edged mask; `expanded_mask_area` is stored as an intermediate image in the `mask` category."""
    mask_image = context.load_image(required(node, "mask", node.mask))
    image = context.load_image(node.image) if node.image is not None else None
    inpaint_model = _is_inpaint_model(context, node)
    vae = load_vae(context, node.vae) if inpaint_model and node.vae is not None else None
    mask, expanded = create_gradient_mask(
        mask_image,
        edge_radius=node.edge_radius,
        coherence_mode=node.coherence_mode,
        minimum_denoise=node.minimum_denoise,
        image=image,
        vae=vae,
        fp32=node.fp32,
        inpaint_model=inpaint_model,
    )
    expanded_field: ImageField = context.save_image(
        expanded, metadata=None, board_id=None, is_intermediate=True, category=ImageCategory.MASK
    )
    return GradientMaskOutput(denoise_mask=_store_mask(context, mask), expanded_mask_area=expanded_field)
