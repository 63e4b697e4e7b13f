"""ControlNet in the denoise loop (InvokeAI's `denoise_latents.control`), and the image operations around it.

Per UNet pass, each active ControlNet turns (noisy latents, timestep, text, control image) into residuals for the
UNet's down blocks and mid block; the residuals of several ControlNets are summed. A ControlNet is active on pass
i of n when floor(begin·n) <= i <= ceil(end·n), as in InvokeAI. `control_mode` (InvokeAI's names):

- balanced: the ControlNet sees both halves of the classifier-free-guidance batch, residuals at full weight;
- more_prompt: as balanced, with the residuals of shallower blocks scaled down (diffusers' `guess_mode`);
- more_control: guess-mode scaling, and the residuals go to the conditional half only (the unconditional half
  gets none, so guidance pushes towards the control);
- unbalanced: full-weight residuals on the conditional half only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

# Modes whose residuals are scaled per block depth, and modes applied to the conditional half only.
_SOFT_MODES = frozenset({"more_prompt", "more_control"})
_COND_ONLY_MODES = frozenset({"more_control", "unbalanced"})
# The legacy canny processor rounds its working size to this, as InvokeAI's resize helper does.
_DETECT_MULTIPLE = 64

Residuals = tuple[list[torch.Tensor] | None, torch.Tensor | None]


@dataclass(frozen=True)
class ControlNetInput:
    """One ControlNet for a denoise call: `model` (a diffusers ControlNetModel on the UNet's device), `image`
    ([1, 3, H, W] float in [0, 1] at the output size, see `control_tensor`), `weight` (a float or one per UNet
    pass; 0 leaves the UNet's output as it is), the active fraction of the schedule and the mode."""

    model: Any
    image: torch.Tensor
    weight: float | Sequence[float] = 1.0
    begin_step_percent: float = 0.0
    end_step_percent: float = 1.0
    mode: str = "balanced"


def control_tensor(image: Image.Image, width: int, height: int, resize_mode: str = "just_resize") -> torch.Tensor:
    """The control image fitted to width × height as [1, 3, height, width] in [0, 1] (ControlNets take it so).

    just_resize / just_resize_simple: stretched; crop_resize: scaled to cover, centred and cropped;
    fill_resize: scaled to fit inside, centred on black."""
    rgb = image.convert("RGB")
    if resize_mode == "crop_resize":
        scale = max(width / rgb.width, height / rgb.height)
    elif resize_mode == "fill_resize":
        scale = min(width / rgb.width, height / rgb.height)
    else:
        scale = 0.0
    if scale:
        size = (max(round(rgb.width * scale), 1), max(round(rgb.height * scale), 1))
        scaled = rgb.resize(size, Image.Resampling.LANCZOS)
        canvas = Image.new("RGB", (width, height), (0, 0, 0))
        canvas.paste(scaled, ((width - scaled.width) // 2, (height - scaled.height) // 2))
        rgb = canvas
    elif rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.LANCZOS)
    array = np.asarray(rgb, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def _active(control: ControlNetInput, step: int, total: int) -> bool:
    first = math.floor(control.begin_step_percent * total)
    last = math.ceil(control.end_step_percent * total)
    return first <= step <= last


def _weight_at(weight: float | Sequence[float], step: int) -> float:
    if isinstance(weight, int | float):
        return float(weight)
    return float(weight[min(step, len(weight) - 1)])


def control_residuals(
    controls: Sequence[ControlNetInput],
    model_input: torch.Tensor,
    t: torch.Tensor,
    text: torch.Tensor,
    added: dict[str, torch.Tensor] | None,
    *,
    step: int,
    total: int,
) -> Residuals:
    """The summed (down, mid) residuals of the ControlNets active on UNet pass `step` of `total`, for the
    [unconditional, conditional] batch `model_input` (latent channels only, already scaled by the scheduler);
    (None, None) when none is active."""
    down_sum: list[torch.Tensor] | None = None
    mid_sum: torch.Tensor | None = None
    for control in controls:
        if not _active(control, step, total):
            continue
        down, mid = _run_one(control, model_input, t, text, added, _weight_at(control.weight, step))
        if down_sum is None or mid_sum is None:
            down_sum, mid_sum = down, mid
        else:
            down_sum = [a + b for a, b in zip(down_sum, down, strict=True)]
            mid_sum = mid_sum + mid
    return down_sum, mid_sum


def _run_one(
    control: ControlNetInput,
    model_input: torch.Tensor,
    t: torch.Tensor,
    text: torch.Tensor,
    added: dict[str, torch.Tensor] | None,
    weight: float,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    model = control.model
    cond_only = control.mode in _COND_ONLY_MODES
    image = control.image.to(device=model_input.device, dtype=model_input.dtype)
    if cond_only:
        # The conditional half alone; the unconditional half gets zero residuals below.
        sample, hidden = model_input[1:], text[1:]
        extra = None if added is None else {key: value[1:] for key, value in added.items()}
    else:
        sample, hidden, extra = model_input, text, added
        image = torch.cat([image] * model_input.shape[0])
    down, mid = model(
        sample.to(dtype=model.dtype),
        t,
        encoder_hidden_states=hidden.to(dtype=model.dtype),
        controlnet_cond=image.to(dtype=model.dtype),
        conditioning_scale=weight,
        added_cond_kwargs=extra,
        guess_mode=control.mode in _SOFT_MODES,
        return_dict=False,
    )
    down_list = [residual.to(dtype=model_input.dtype) for residual in down]
    mid = mid.to(dtype=model_input.dtype)
    if cond_only:
        down_list = [torch.cat([torch.zeros_like(residual), residual]) for residual in down_list]
        mid = torch.cat([torch.zeros_like(mid), mid])
    return down_list, mid


def canny_edges(image: Image.Image, low_threshold: int = 100, high_threshold: int = 200) -> Image.Image:
    """InvokeAI's canny detector: OpenCV's Canny on the RGB pixels, white (255) edges on black, as RGB."""
    array = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    edges = cv2.Canny(array, low_threshold, high_threshold)
    return Image.fromarray(edges).convert("RGB")


def canny_at_resolution(
    image: Image.Image, low_threshold: int, high_threshold: int, detect_resolution: int, image_resolution: int
) -> Image.Image:
    """The legacy `canny_image_processor`: detect with the short side scaled to `detect_resolution`, return the
    edges with the short side scaled to `image_resolution` (both rounded to multiples of 64)."""
    detected = canny_edges(_short_side(image, detect_resolution), low_threshold, high_threshold)
    return _short_side(detected, image_resolution, resample=Image.Resampling.NEAREST)


def _short_side(
    image: Image.Image, resolution: int, resample: Image.Resampling = Image.Resampling.LANCZOS
) -> Image.Image:
    scale = resolution / min(image.width, image.height)
    size = tuple(max(round(side * scale / _DETECT_MULTIPLE) * _DETECT_MULTIPLE, _DETECT_MULTIPLE)
                 for side in image.size)  # fmt: skip
    return image if size == image.size else image.resize((size[0], size[1]), resample)


def lerp_image(image: Image.Image, low: int, high: int) -> Image.Image:
    """InvokeAI's `img_lerp`: every channel value v becomes low + v / 255 · (high - low); (255, 0) inverts."""
    source = image if image.mode in ("L", "RGB", "RGBA") else image.convert("RGB")
    array = np.asarray(source, dtype=np.float32) / 255.0
    mapped = np.clip(np.rint(array * (high - low) + low), 0, 255).astype(np.uint8)
    return Image.fromarray(mapped)  # L, RGB or RGBA again, from the array's shape
