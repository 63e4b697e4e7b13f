"""Latent-space operations of InvokeAI's `noise`, `denoise_latents`, `l2i` and `i2l` nodes, plus progress previews.

Conventions: tensors passed between nodes (noise, latents, masks) are float32 on the CPU with a batch of 1;
each operation moves them to its model's device and dtype and returns CPU float32 again. Latents are scaled
(multiplied by the VAE's `scaling_factor`), as the UNet sees them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from diffusers import TCDScheduler
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg
from PIL import Image

from serve_app.domain.errors import InvalidRequest, JobCanceled
from serve_app.domain.models import ModelFamily
from serve_app.inference.nodes.control import ControlNetInput, control_residuals
from serve_app.inference.nodes.images import image_to_tensor
from serve_app.inference.nodes.prompts import Conditioning

LATENT_CHANNELS = 4
LATENT_SCALE = 8

StepCallback = Callable[[int, int, torch.Tensor], None]
StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class UNetInputs:
    """What every UNet pass of one denoise call reads besides the sample and timestep: the [negative, positive]
    text embeddings (and attention mask, SDXL's added conditions), a 9-channel inpainting UNet's extra input
    channels (over the whole latent) and the ControlNets."""

    text: torch.Tensor
    attention: torch.Tensor | None
    added: dict[str, torch.Tensor] | None
    extra: torch.Tensor | None
    control: Sequence[ControlNetInput]


# (unet, scaled [uncond, cond] model input, t, inputs, pass index, passes) -> the unguided noise prediction.
UNetPass = Callable[[Any, torch.Tensor, torch.Tensor, UNetInputs, int, int], torch.Tensor]


def unet_pass(
    unet: Any, model_input: torch.Tensor, t: torch.Tensor, inputs: UNetInputs, step: int, total: int
) -> torch.Tensor:
    """One UNet pass over the whole `model_input`, ControlNet residuals added (the plain `denoise_latents`)."""
    down, mid = control_residuals(inputs.control, model_input, t, inputs.text, inputs.added, step=step, total=total)
    if inputs.extra is not None:
        model_input = torch.cat([model_input, inputs.extra], dim=1)
    prediction: torch.Tensor = unet(
        model_input,
        t,
        encoder_hidden_states=inputs.text,
        encoder_attention_mask=inputs.attention,
        added_cond_kwargs=inputs.added,
        down_block_additional_residuals=down,
        mid_block_additional_residual=mid,
        return_dict=False,
    )[0]
    return prediction


@dataclass(frozen=True)
class DenoiseMask:
    """An inpainting mask, InvokeAI's `DenoiseMaskField`.

    `mask` [1, 1, h, w] float32 in [0, 1] (any resolution; resized to the latents bilinearly): **1 = keep the
    input latents, 0 = regenerate fully**, in between = partial. Same convention as the mask image (white = keep).
    `gradient` (from `create_gradient_mask`): a value m is held to the original until the schedule reaches
    t/T < 1 - m, i.e. it is denoised with strength 1 - m; otherwise (binary masks) the latents are blended
    linearly. `masked_latents` (the VAE latents of the image with the regenerated area blacked out) is read only
    by 9-channel inpainting UNets."""

    mask: torch.Tensor
    masked_latents: torch.Tensor | None = None
    gradient: bool = False


def make_noise(seed: int, width: int, height: int, *, use_cpu: bool = True, device: torch.device | str = "cpu") -> Any:
    """The `noise` node: N(0, 1) of shape [1, 4, height/8, width/8], float32 on the CPU.

    Drawn from a CPU generator (same numbers on any machine) unless `use_cpu` is False, when it is drawn on
    `device` (faster on GPUs, different numbers)."""
    if width % LATENT_SCALE or height % LATENT_SCALE or width <= 0 or height <= 0:
        raise InvalidRequest(f"width and height must be positive multiples of 8, got {width}x{height}", field="width")
    rand_device = torch.device("cpu") if use_cpu else torch.device(device)
    generator = torch.Generator(device=rand_device).manual_seed(seed)
    shape = (1, LATENT_CHANNELS, height // LATENT_SCALE, width // LATENT_SCALE)
    return torch.randn(shape, generator=generator, device=rand_device, dtype=torch.float32).cpu()


@dataclass(frozen=True)
class _Schedule:
    timesteps: torch.Tensor
    init_timestep: torch.Tensor
    start_index: int
    first_step: int


def _select_timesteps(scheduler: Any, steps: int, start: float, end: float, device: torch.device) -> _Schedule:
    # InvokeAI's init_scheduler: keep the timesteps inside [1-end, 1-start]·T, counted in whole steps.
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    order = int(scheduler.order)
    whole = timesteps[::order]
    train = int(scheduler.config["num_train_timesteps"])
    start_value = int(round(train * (1 - start)))
    start_steps = int((whole >= start_value).sum())
    end_value = int(round(train * (1 - end)))
    end_steps = int((whole[start_steps:] >= end_value).sum())
    start_index, count = start_steps * order, end_steps * order
    return _Schedule(
        timesteps=timesteps[start_index : start_index + count],
        init_timestep=timesteps[start_index : start_index + 1],
        start_index=start_index,
        first_step=start_steps,
    )


def _step_kwargs(scheduler: Any, seed: int, device: torch.device) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if "generator" in inspect.signature(scheduler.step).parameters:
        # InvokeAI seeds the schedulers' own noise with the seed's bits flipped; kept for reproducibility.
        kwargs["generator"] = torch.Generator(device=device).manual_seed(seed ^ 0xFFFFFFFF)
    if isinstance(scheduler, TCDScheduler):
        kwargs["eta"] = 1.0
    return kwargs


def _batched_conditioning(
    positive: Conditioning, negative: Conditioning, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor] | None]:
    # [negative, positive]; a shorter prompt is padded with zeros that the attention mask hides.
    if positive.is_sdxl != negative.is_sdxl or (
        positive.add_time_ids is not None
        and negative.add_time_ids is not None
        and positive.add_time_ids.shape != negative.add_time_ids.shape  # SDXL (6 time ids) vs refiner (5)
    ):
        raise InvalidRequest("positive and negative conditioning come from different model families")
    length = max(positive.embeds.shape[1], negative.embeds.shape[1])
    embeds, masks = [], []
    for cond in (negative, positive):
        pad = length - cond.embeds.shape[1]
        embeds.append(F.pad(cond.embeds, (0, 0, 0, pad)))
        masks.append(torch.cat([torch.ones(cond.embeds.shape[1]), torch.zeros(pad)]))
    text = torch.cat(embeds).to(device=device, dtype=dtype)
    attention = None
    if positive.embeds.shape != negative.embeds.shape:
        attention = torch.stack(masks).to(device=device, dtype=dtype)
    added = None
    if positive.is_sdxl:
        assert positive.pooled is not None and negative.pooled is not None
        assert positive.add_time_ids is not None and negative.add_time_ids is not None
        added = {
            "text_embeds": torch.cat([negative.pooled, positive.pooled]).to(device=device, dtype=dtype),
            "time_ids": torch.cat([negative.add_time_ids, positive.add_time_ids]).to(device=device, dtype=dtype),
        }
    return text, attention, added


@torch.no_grad()
def denoise(
    unet: Any,
    scheduler: Any,
    positive: Conditioning,
    negative: Conditioning,
    *,
    noise: torch.Tensor | None,
    latents: torch.Tensor | None = None,
    steps: int = 10,
    cfg_scale: float | Sequence[float] = 7.5,
    cfg_rescale_multiplier: float = 0.0,
    denoising_start: float = 0.0,
    denoising_end: float = 1.0,
    denoise_mask: DenoiseMask | None = None,
    seed: int = 0,
    on_step: StepCallback | None = None,
    should_stop: StopCheck | None = None,
    control: Sequence[ControlNetInput] = (),
    predict: UNetPass = unet_pass,
) -> Any:
    """The `denoise_latents` node: classifier-free guided denoising with our own loop over `unet`.

    `scheduler`: a fresh scheduler (see `ModelComponents.scheduler`); it is consumed. `steps`: the schedule's
    length before the `denoising_start`/`denoising_end` fractions cut it (InvokeAI semantics: only the timesteps in
    [(1-end)·T, (1-start)·T] run). Start: with `latents`, they are noised with `noise` to the first kept timestep
    (img2img; start 0 is almost pure noise), or taken as already noised when `noise` is None (a refiner pass);
    without `latents`, `noise · init_noise_sigma` (txt2img). `cfg_scale`: a float or
    one value per step (len == steps). `cfg_rescale_multiplier`: diffusers' guidance rescale (0 = off).
    `denoise_mask`: inpainting, see `DenoiseMask`. `seed`: seeds ancestral/SDE scheduler noise (and inpaint noise
    when `noise` is None). `on_step(done, total, latents)` runs after every UNet pass (`total` counts passes of the
    cut schedule, so second-order schedulers report more than `steps`); `should_stop()` is polled before every pass
    and JobCanceled raised when it answers True. `control`: ControlNets whose residuals are added to every UNet
    pass they are active on (see `nodes.control`). `predict`: how one UNet pass is made (`unet_pass`; the tiled
    node's MultiDiffusion blends passes over tiles, nodes/tiled.py). Returns latents [1, 4, h, w], float32 on the
    CPU."""
    _check_arguments(steps, cfg_scale, denoising_start, denoising_end, noise, latents)
    device, dtype = unet.device, unet.dtype

    schedule = _select_timesteps(scheduler, steps, denoising_start, denoising_end, device)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(schedule.start_index)
    reference = latents if latents is not None else noise
    assert reference is not None
    orig = (latents if latents is not None else torch.zeros_like(reference)).to(device=device, dtype=dtype)
    if noise is not None and noise.shape != orig.shape:
        raise InvalidRequest(f"noise {tuple(noise.shape)} and latents {tuple(orig.shape)} differ in shape")
    if len(schedule.init_timestep) == 0:
        return orig.float().cpu()
    if noise is not None:
        noise = noise.to(device=device, dtype=dtype)
        if latents is None:
            sample = noise * scheduler.init_noise_sigma
        else:
            sample = scheduler.add_noise(orig, noise, schedule.init_timestep.expand(orig.shape[0]))
    else:
        # Latents without noise are taken as already noised (e.g. a refiner pass after a denoising_end); the mask
        # guidance still needs noise, drawn from the seed as InvokeAI does.
        sample = orig
        noise = torch.randn(orig.shape, generator=torch.Generator("cpu").manual_seed(seed)).to(device, dtype)

    mask = _prepare_mask(denoise_mask, orig, device, dtype)
    inpaint_model = int(unet.config.in_channels) == 2 * LATENT_CHANNELS + 1
    extra = _inpaint_channels(denoise_mask, mask, orig) if inpaint_model else None
    text, attention, added = _batched_conditioning(positive, negative, device, dtype)
    inputs = UNetInputs(text=text, attention=attention, added=added, extra=extra, control=control)
    kwargs = _step_kwargs(scheduler, seed, device)
    total = len(schedule.timesteps)
    order = int(scheduler.order)

    for index, t in enumerate(schedule.timesteps):
        if should_stop is not None and should_stop():
            raise JobCanceled()
        if mask is not None and denoise_mask is not None and not inpaint_model:
            sample = _apply_mask(scheduler, sample, orig, noise, mask, t, gradient=denoise_mask.gradient)
        model_input = scheduler.scale_model_input(torch.cat([sample] * 2), t)
        prediction = predict(unet, model_input, t, inputs, index, total)
        scale = _scale_at(cfg_scale, schedule.first_step + index // order)
        guided = _guided(prediction, scale, cfg_rescale_multiplier)
        sample = scheduler.step(guided, t, sample, **kwargs, return_dict=False)[0]
        if on_step is not None:
            on_step(index + 1, total, sample)

    if mask is not None and denoise_mask is not None:
        # Put the kept region back exactly, now that no noise is left in it.
        sample = torch.where(mask < 1, sample, orig) if denoise_mask.gradient else torch.lerp(sample, orig, mask)
    return sample.float().cpu()


def _check_arguments(
    steps: int,
    cfg_scale: float | Sequence[float],
    start: float,
    end: float,
    noise: torch.Tensor | None,
    latents: torch.Tensor | None,
) -> None:
    if steps < 1:
        raise InvalidRequest(f"steps must be at least 1, got {steps}", field="steps")
    if not 0 <= start <= 1 or not 0 <= end <= 1:
        raise InvalidRequest("denoising_start and denoising_end must lie in [0, 1]", field="denoising_start")
    if not isinstance(cfg_scale, int | float) and len(cfg_scale) != steps:
        raise InvalidRequest(f"cfg_scale has {len(cfg_scale)} values for {steps} steps", field="cfg_scale")
    if noise is None and latents is None:
        raise InvalidRequest("denoise needs noise, latents or both", field="noise")


def _inpaint_channels(denoise_mask: DenoiseMask | None, mask: torch.Tensor | None, orig: torch.Tensor) -> Any:
    # The 5 extra input channels of a 9-channel inpainting UNet, for the [uncond, cond] batch. These models take
    # diffusers' convention: 1 = repaint.
    masked = torch.zeros_like(orig)
    if denoise_mask is not None and denoise_mask.masked_latents is not None:
        masked = denoise_mask.masked_latents.to(device=orig.device, dtype=orig.dtype)
    repaint = 1 - mask if mask is not None else torch.ones_like(orig[:, :1])
    return torch.cat([torch.cat([repaint, masked], dim=1)] * 2)


def _guided(prediction: torch.Tensor, scale: float, rescale: float) -> Any:
    uncond, cond = prediction.chunk(2)
    guided = uncond + scale * (cond - uncond)
    if rescale > 0:
        guided = rescale_noise_cfg(guided, cond, guidance_rescale=rescale)  # type: ignore[no-untyped-call]
    return guided


def _scale_at(cfg_scale: float | Sequence[float], step: int) -> float:
    if isinstance(cfg_scale, int | float):
        return float(cfg_scale)
    return float(cfg_scale[min(step, len(cfg_scale) - 1)])


def _prepare_mask(
    denoise_mask: DenoiseMask | None, latents: torch.Tensor, device: torch.device, dtype: torch.dtype
) -> torch.Tensor | None:
    if denoise_mask is None:
        return None
    mask = denoise_mask.mask.float()
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    if mask.shape[-2:] != latents.shape[-2:]:
        mask = F.interpolate(mask, size=latents.shape[-2:], mode="bilinear", align_corners=False, antialias=False)
    return mask.clamp(0, 1).to(device=device, dtype=dtype)


def _apply_mask(
    scheduler: Any,
    sample: torch.Tensor,
    orig: torch.Tensor,
    noise: torch.Tensor,
    mask: torch.Tensor,
    t: torch.Tensor,
    *,
    gradient: bool,
) -> torch.Tensor:
    # InvokeAI's InpaintExt: the kept region follows the original, noised with the same noise to this timestep.
    kept = scheduler.add_noise(orig, noise, t.reshape(1).expand(orig.shape[0]))
    if gradient:
        threshold = float(t) / int(scheduler.config["num_train_timesteps"])
        return torch.where(mask < 1 - threshold, sample, kept)
    return torch.lerp(sample, kept, mask)


@torch.no_grad()
def decode(vae: Any, latents: torch.Tensor, *, fp32: bool = False) -> Image.Image:
    """The `l2i` node: scaled latents [1, 4, h, w] -> an RGB image of 8h × 8w. `fp32` decodes in float32 (the VAE is
    cast for the call and cast back), avoiding fp16 overflow in SD 1.5/SDXL VAEs."""
    with _VaePrecision(vae, fp32) as dtype:
        scaled = latents.to(device=vae.device, dtype=dtype) / vae.config.scaling_factor
        shift = getattr(vae.config, "shift_factor", None)
        if shift:
            scaled = scaled + shift
        image = vae.decode(scaled, return_dict=False)[0]
    array = ((image[0].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray((array * 255).round().astype(np.uint8), mode="RGB")


@torch.no_grad()
def encode(vae: Any, image: Image.Image, *, fp32: bool = False) -> Any:
    """The `i2l` node: an image (cropped down to multiples of 8, as InvokeAI) -> scaled latents, float32 on the CPU.

    Deterministic: the latent distribution's mode, not a sample (InvokeAI samples unseeded)."""
    pixels = image_to_tensor(image.convert("RGB"))
    return encode_tensor(vae, pixels, fp32=fp32)


@torch.no_grad()
def encode_tensor(vae: Any, pixels: torch.Tensor, *, fp32: bool = False) -> Any:
    """Like `encode`, for a [1, 3, H, W] tensor in [-1, 1]."""
    with _VaePrecision(vae, fp32) as dtype:
        dist = vae.encode(pixels.to(device=vae.device, dtype=dtype)).latent_dist
        latents = dist.mode()
        shift = getattr(vae.config, "shift_factor", None)
        if shift:
            latents = latents - shift
        latents = latents * vae.config.scaling_factor
    return latents.float().cpu()


class _VaePrecision:
    """Casts a VAE to float32 for one call when asked and it is not already."""

    def __init__(self, vae: Any, fp32: bool) -> None:
        self._vae = vae
        self._original = vae.dtype
        self._cast = fp32 and vae.dtype != torch.float32

    def __enter__(self) -> torch.dtype:
        if self._cast:
            self._vae.to(dtype=torch.float32)
            return torch.float32
        return self._original  # type: ignore[no-any-return]

    def __exit__(self, *exc: object) -> None:
        if self._cast:
            self._vae.to(dtype=self._original)


# InvokeAI's latent -> RGB factors for progress images (SD 1.5 by @torridgristle, SDXL by @StAlKeR7779).
_SD1_FACTORS = [
    [0.3444, 0.1385, 0.0670],
    [0.1247, 0.4027, 0.1494],
    [-0.3192, 0.2513, 0.2103],
    [-0.1307, -0.1874, -0.7445],
]
_SDXL_FACTORS = [
    [0.3816, 0.4930, 0.5320],
    [-0.3753, 0.1631, 0.1739],
    [0.1770, 0.3588, -0.2048],
    [-0.4350, -0.2644, -0.4289],
]
_SDXL_SMOOTH = [
    [0.0358, 0.0964, 0.0358],
    [0.0964, 0.4711, 0.0964],
    [0.0358, 0.0964, 0.0358],
]


@torch.no_grad()
def preview(latents: torch.Tensor, family: ModelFamily) -> Image.Image:
    """A cheap progress image at latent resolution (w/8 × h/8): a fixed linear map of the 4 latent channels to RGB
    (InvokeAI's tables; SD 2 uses SD 1's), smoothed for SDXL. No VAE involved."""
    sample = latents[0].detach().float().cpu()
    sdxl = family in (ModelFamily.SDXL, ModelFamily.SDXL_REFINER)  # one latent space
    factors = torch.tensor(_SDXL_FACTORS if sdxl else _SD1_FACTORS)
    rgb = torch.einsum("chw,cr->rhw", sample, factors)
    if sdxl:
        kernel = torch.tensor(_SDXL_SMOOTH).expand(3, 1, 3, 3)
        rgb = F.conv2d(rgb.unsqueeze(0), kernel, padding=1, groups=3)[0]
    array = ((rgb + 1) / 2).clamp(0, 1).mul(255).byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array, mode="RGB")
