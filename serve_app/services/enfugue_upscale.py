"""Enfugue's post-processing upscale (enfugue-api.md §5.2) as passes, and as graph nodes after each sample.

Each pass resizes the previous image to `scale` × the generated size: `img_resize` with PIL's filter, or for
`esrgan`/`esrganime` `spandrel_image_to_image_autoscale` with the installed model resolved at submit
(services/enfugue_esrgan.py), which runs the model as often as needed and then resizes to exactly that size; with
`upscale_diffusion` it then re-diffuses the result (i2l → denoise from `1 - strength` → l2i), as Enfugue's
"Re-diffusing Upscaled Sample". A pass whose image is wider or taller than the diffusion window (the request's
`size`, else the model's native size) diffuses in overlapping windows, as Enfugue's chunked diffusion, with the
pass's stride from `upscale_diffusion_chunking_size` / `upscale_diffusion_scale_chunking_size`
(services/enfugue_chunking.py documents how it grows per pass; 0 diffuses the whole image at once); the
`_chunking_blur` keys are validated and kept but change nothing. `upscale_pipeline` is accepted and ignored (no
refiner runs here). `upscale_diffusion_controlnet` guides a pass's re-diffusion with a ControlNet whose control image is
the upscaled image: canny (through the detector) and tile (as it is) run; the other names Enfugue handles need
detectors this server lacks (400); the rest Enfugue ignores with a logged error, and so does this server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import (
    CONTROLNET_NAMES,
    DEFAULT_UPSCALE_DIFFUSION_PROMPT,
    MODEL_UPSCALE_METHODS,
    PIL_UPSCALE_METHODS,
    SPANDREL_UPSCALE_METHODS,
    UpscalePass,
)
from serve_app.domain.graph.invocations import SEED_MAX
from serve_app.services.enfugue_chunking import upscale_denoise

T = TypeVar("T")

log = logging.getLogger(__name__)

# `upscale_diffusion_controlnet` (enfugue-api.md §5.2): Enfugue handles these names and drops any other; of them,
# canny and tile run here (a detector this server has, or none), the rest would need detector models.
UPSCALE_CONTROLNETS = ("canny", "tile")
_NEEDS_DETECTOR = ("hed", "scribble", "mlsd", "line", "anime", "depth", "normal")


def per_pass(value: T | Sequence[T] | None, index: int, default: T) -> T:
    """Enfugue's "one value, or a list with one value per pass": a short list repeats its last value."""
    if value is None:
        return default
    if isinstance(value, (list, tuple)):
        return value[min(index, len(value) - 1)] if value else default
    return value  # type: ignore[return-value]


def pass_scales(outscale: int, iterative: bool) -> list[int]:
    """The cumulative scale after each pass: one pass, or passes of 2× (a last smaller one when `outscale` is
    not a power of two)."""
    if outscale <= 1:
        return []
    if not iterative:
        return [outscale]
    scales = []
    scale = 2
    while scale < outscale:
        scales.append(scale)
        scale *= 2
    return [*scales, outscale]


def check_method(method: Any) -> str:
    if method in MODEL_UPSCALE_METHODS and method not in SPANDREL_UPSCALE_METHODS:
        # Refused before anything is stored: Enfugue's GFPGAN finds, aligns and restores faces around the model,
        # none of which this server does.
        raise InvalidRequest(f"No upscaling model installed for {method}: this server does not run GFPGAN face "
                             f"restoration; use esrgan, esrganime or {', '.join(PIL_UPSCALE_METHODS)}",
                             field="upscale")  # fmt: skip
    if method not in PIL_UPSCALE_METHODS and method not in SPANDREL_UPSCALE_METHODS:
        allowed = ", ".join((*MODEL_UPSCALE_METHODS, *PIL_UPSCALE_METHODS))
        raise InvalidRequest(f"Unknown upscale method {method!r}; expected one of {allowed}", field="upscale")
    return str(method)


def check_upscale_controlnet(value: Any) -> str | None:
    """One pass's `upscale_diffusion_controlnet`: a name that runs, None for none (or for a name Enfugue ignores),
    InvalidRequest for a name that is no controlnet or needs a detector this server does not have."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value not in CONTROLNET_NAMES:
        raise InvalidRequest(f"Unknown controlnet {value!r}; expected one of {', '.join(CONTROLNET_NAMES)}",
                             field="upscale_diffusion_controlnet")  # fmt: skip
    if value in _NEEDS_DETECTOR:
        raise InvalidRequest(
            f"Upscale re-diffusion with `{value}` needs its detector, which this server does not have; use "
            f"{' or '.join(UPSCALE_CONTROLNETS)}",
            field="upscale_diffusion_controlnet",
        )
    if value not in UPSCALE_CONTROLNETS:
        log.warning("upscale_diffusion_controlnet %s is not used for upscaling (as in Enfugue); running without", value)
        return None
    return value


def check_upscale_chunking(value: int | None, name: str) -> int | None:
    """One pass's `upscale_diffusion_chunking_<name>`: None (Enfugue's default) or 0 and more."""
    if value is not None and value < 0:
        raise InvalidRequest(f"`upscale_diffusion_chunking_{name}` must be 0 or more, got {value}",
                             field=f"upscale_diffusion_chunking_{name}")  # fmt: skip
    return value


@dataclass(frozen=True)
class UpscaleSettings:
    """Enfugue's upscale keys as sent: each `Any` is one value or a list with one value per pass."""

    upscale: Any = None
    outscale: int = 1
    iterative: bool = False
    diffusion: bool = False
    steps: Any = None
    guidance_scale: Any = None
    strength: Any = None
    prompt: Any = None
    prompt_2: Any = None
    negative_prompt: Any = None
    negative_prompt_2: Any = None
    controlnet: Any = None
    chunking_size: Any = None
    chunking_blur: Any = None
    scale_chunking_size: bool = True
    scale_chunking_blur: bool = True

    def passes(self) -> list[UpscalePass]:
        """The passes to run (none unless both `upscale` and an `outscale` above 1 are given, as in Enfugue);
        InvalidRequest for a method this server cannot run."""
        methods = self.upscale if isinstance(self.upscale, list) else [self.upscale]
        for method in methods:
            if method is not None:
                check_method(method)
        if self.upscale in (None, "", []):
            return []
        result = []
        for index, scale in enumerate(pass_scales(self.outscale, self.iterative)):
            values: dict[str, Any] = {"scale": scale, "method": check_method(per_pass(self.upscale, index, None))}
            if self.diffusion:
                values |= {
                    "steps": per_pass(self.steps, index, 100),
                    "guidance_scale": per_pass(self.guidance_scale, index, 12.0),
                    "strength": per_pass(self.strength, index, 0.2),
                    "prompt": per_pass(self.prompt, index, DEFAULT_UPSCALE_DIFFUSION_PROMPT),
                    "prompt_2": per_pass(self.prompt_2, index, None),
                    "negative_prompt": per_pass(self.negative_prompt, index, ""),
                    "negative_prompt_2": per_pass(self.negative_prompt_2, index, None),
                    "controlnet": check_upscale_controlnet(per_pass(self.controlnet, index, None)),
                    "chunking_size": check_upscale_chunking(per_pass(self.chunking_size, index, None), "size"),
                    "chunking_blur": check_upscale_chunking(per_pass(self.chunking_blur, index, None), "blur"),
                    "scale_chunking_size": self.scale_chunking_size,
                    "scale_chunking_blur": self.scale_chunking_blur,
                }
            result.append(UpscalePass.model_validate(values))
        return result


class UpscaleKeys(BaseModel):
    """Enfugue's upscale keys as a request (api/enfugue/schemas.py InvokeBody) or a preset's default configuration
    (services/preset_upscale.py) carries them: each `Any`/list is one value or a list with one value per pass."""

    model_config = ConfigDict(extra="ignore")

    upscale: Any = None
    outscale: int = Field(default=1, ge=1)
    upscale_iterative: bool = False
    upscale_diffusion: bool = False
    upscale_diffusion_steps: int | list[int] | None = None
    upscale_diffusion_guidance_scale: float | list[float] | None = None
    upscale_diffusion_strength: float | list[float] | None = None
    upscale_diffusion_prompt: str | list[str] | None = None
    upscale_diffusion_prompt_2: str | list[str] | None = None
    upscale_diffusion_negative_prompt: str | list[str] | None = None
    upscale_diffusion_negative_prompt_2: str | list[str] | None = None
    upscale_diffusion_controlnet: str | list[str] | None = None
    upscale_diffusion_chunking_size: NonNegativeInt | list[NonNegativeInt] | None = None
    upscale_diffusion_chunking_blur: NonNegativeInt | list[NonNegativeInt] | None = None
    upscale_diffusion_scale_chunking_size: bool = True
    upscale_diffusion_scale_chunking_blur: bool = True

    def upscale_settings(self) -> UpscaleSettings:
        return UpscaleSettings(
            upscale=self.upscale,
            outscale=self.outscale,
            iterative=self.upscale_iterative,
            diffusion=self.upscale_diffusion,
            steps=self.upscale_diffusion_steps,
            guidance_scale=self.upscale_diffusion_guidance_scale,
            strength=self.upscale_diffusion_strength,
            prompt=self.upscale_diffusion_prompt,
            prompt_2=self.upscale_diffusion_prompt_2,
            negative_prompt=self.upscale_diffusion_negative_prompt,
            negative_prompt_2=self.upscale_diffusion_negative_prompt_2,
            controlnet=self.upscale_diffusion_controlnet,
            chunking_size=self.upscale_diffusion_chunking_size,
            chunking_blur=self.upscale_diffusion_chunking_blur,
            scale_chunking_size=self.upscale_diffusion_scale_chunking_size,
            scale_chunking_blur=self.upscale_diffusion_scale_chunking_blur,
        )


NodeFn = Callable[..., str]
EdgeFn = Callable[[str, str, str, str], None]


@dataclass
class UpscaleBuilder:
    """Adds the upscale passes after a sample's decoded image, with the generation graph's `node`/`edge`
    helpers and the handles its denoise uses (the last LoRA's `unet`/`clip`/`clip2`, the decoder's `vae`);
    `upscalers` holds the spandrel model (its ModelIdentifierField) per model-based method the passes use."""

    node: NodeFn
    edge: EdgeFn
    passes: Sequence[UpscalePass]
    width: int
    height: int
    scheduler: str
    sources: dict[str, str]
    decoder: str
    sdxl: bool
    upscalers: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    # The installed ControlNet per `upscale_diffusion_controlnet` name (resolved at submit), and the builder of its
    # nodes from an image node (services/enfugue_control.image_control_node; injected, as that module builds on
    # this one).
    controlnets: Mapping[str, Any] = field(default_factory=dict)
    control_node: Callable[..., str] | None = None
    # The diffusion window in pixels (the request's `size`, else the model's native size): a pass's image larger
    # than it re-diffuses in chunks (services/enfugue_chunking.py); 0 never chunks.
    window: int = 0
    _prompts: set[int] = field(default_factory=set)

    def add(self, decoded: str, *, index: int, seed: int, output: str, metadata: str) -> str:
        """Chains the passes after `decoded` (an intermediate image node); the last node gets the id `output`,
        is saved to the gallery and carries the metadata. Returns its id."""
        image = decoded
        previous = 1
        for number, step in enumerate(self.passes):
            last = number == len(self.passes) - 1
            width, height = self.width * step.scale, self.height * step.scale
            final = last and step.steps is None
            node_id = output if final else f"upscale_{index}_{number}"
            if step.method in SPANDREL_UPSCALE_METHODS:
                # The scale counts from this pass's input; previous is a power of two (or 1), so the node's
                # `int(size * scale)` is exactly width × height.
                resized = self.node(node_id, "spandrel_image_to_image_autoscale", is_intermediate=not final,
                                    image_to_image_model=self._upscaler(step.method),
                                    scale=step.scale / previous)  # fmt: skip
            else:
                resized = self.node(node_id, "img_resize", is_intermediate=not final, width=width, height=height,
                                    resample_mode=step.method)  # fmt: skip
            previous = step.scale
            self.edge(image, "image", resized, "image")
            image = resized
            if step.steps is not None:
                image = self._rediffuse(step, number, resized, index=index, seed=seed, width=width, height=height,
                                        output=output if last else None)  # fmt: skip
        self.edge(metadata, "metadata", image, "metadata")
        return image

    def _upscaler(self, method: str) -> dict[str, Any]:
        model = self.upscalers.get(method)
        if model is None:
            raise InvalidRequest(f"No upscaling model installed for {method}", field="upscale")
        return model

    def _rediffuse(self, step: UpscalePass, number: int, image: str, *, index: int, seed: int, width: int,
                   height: int, output: str | None) -> str:  # fmt: skip
        positive, negative = self._prompt_nodes(step, number, width, height)
        latents = self.node(f"upscale_i2l_{index}_{number}", "i2l")
        self.edge(image, "image", latents, "image")
        self.edge(self.decoder, "vae", latents, "vae")
        noise = self.node(f"upscale_noise_{index}_{number}", "noise", seed=seed % (SEED_MAX + 1), width=width,
                          height=height)  # fmt: skip
        # Named apart from `denoise_<i>`, whose previews are the sample's intermediates.
        kind, tiles = upscale_denoise(step, number, self.window, width, height)
        denoise = self.node(f"upscale_denoise_{index}_{number}", kind, steps=step.steps,
                            cfg_scale=step.guidance_scale, scheduler=self.scheduler,
                            denoising_start=1.0 - step.strength, **tiles)  # fmt: skip
        self.edge(self.sources["unet"], "unet", denoise, "unet")
        self.edge(positive, "conditioning", denoise, "positive_conditioning")
        self.edge(negative, "conditioning", denoise, "negative_conditioning")
        self.edge(noise, "noise", denoise, "noise")
        self.edge(latents, "latents", denoise, "latents")
        if step.controlnet is not None:
            model = self.controlnets.get(step.controlnet)
            if model is None or self.control_node is None:
                raise InvalidRequest(f"No ControlNet model for `{step.controlnet}` is installed",
                                     field="upscale_diffusion_controlnet")  # fmt: skip
            control = self.control_node(self.node, self.edge, step.controlnet, model, image=image,
                                        prefix=f"upscale_control_{index}_{number}")  # fmt: skip
            self.edge(control, "control", denoise, "control")
        decoded = self.node(output or f"upscale_l2i_{index}_{number}", "l2i", is_intermediate=output is None)
        self.edge(denoise, "latents", decoded, "latents")
        self.edge(self.decoder, "vae", decoded, "vae")
        return decoded

    def _prompt_nodes(self, step: UpscalePass, number: int, width: int, height: int) -> tuple[str, str]:
        """The pass's prompt encodings, made once and shared by every sample."""
        ids = f"upscale_positive_{number}", f"upscale_negative_{number}"
        if number in self._prompts:
            return ids
        self._prompts.add(number)
        texts = ((step.prompt, step.prompt_2), (step.negative_prompt, step.negative_prompt_2))
        for node_id, (text, text_2) in zip(ids, texts, strict=True):
            if self.sdxl:
                self.node(node_id, "sdxl_compel_prompt", prompt=text, style=text_2 or text, original_width=width,
                          original_height=height, target_width=width, target_height=height)  # fmt: skip
                self.edge(self.sources["clip2"], "clip2", node_id, "clip2")
            else:
                self.node(node_id, "compel", prompt=text)
            self.edge(self.sources["clip"], "clip", node_id, "clip")
        return ids
