"""A generation request (text to image, image to image, inpaint) in dialect-neutral terms, and its limits."""

from __future__ import annotations

import json
import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.presets import WeightedModel

# Canonical scheduler names (Enfugue's keys, 0.2.2 plus the 0.2.3+/0.3 variants). Each API
# dialect maps its own names onto these; inference maps these onto diffusers classes.
SCHEDULER_NAMES: frozenset[str] = frozenset(
    {
        "ddim", "ddpm", "deis", "dpmsm", "dpmsms", "dpmsmk", "dpmsmka", "dpmss", "dpmssk",
        "heun", "dpmd", "dpmdk", "adpmd", "adpmdk", "dpmsde", "unipc", "lmsd", "lmsdk",
        "pndm", "eds", "edsk", "eads", "lcm",
    }
)  # fmt: skip

MAX_SEED = 2**63 - 1
# Enfugue's defaults (diffusion/plan.py), applied at submit when neither the request nor a model preset sets them.
DEFAULT_STEPS = 40
DEFAULT_GUIDANCE_SCALE = 7.5


def random_seed() -> int:
    """A fresh seed, chosen at submit time so that a retried attempt reproduces the same pixels."""
    return secrets.randbelow(2**32)


# Enfugue's scheduler keys as the InvokeAI names of the same diffusers class and config (one engine,
# one scheduler table: serve_app.inference.schedulers holds both vocabularies).
ENFUGUE_TO_INVOKEAI_SCHEDULER: dict[str, str] = {
    "ddim": "ddim", "ddpm": "ddpm", "deis": "deis", "dpmsm": "dpmpp_2m", "dpmsms": "dpmpp_2m_sde",
    "dpmsmk": "dpmpp_2m_k", "dpmsmka": "dpmpp_2m_sde_k", "dpmss": "dpmpp_2s", "dpmssk": "dpmpp_2s_k",
    "heun": "heun", "dpmd": "kdpm_2", "dpmdk": "kdpm_2_k", "adpmd": "kdpm_2_a", "adpmdk": "kdpm_2_a_k",
    "dpmsde": "dpmpp_sde", "unipc": "unipc", "lmsd": "lms", "lmsdk": "lms_k", "pndm": "pndm",
    "eds": "euler", "edsk": "euler_k", "eads": "euler_a", "lcm": "lcm",
}  # fmt: skip


# Enfugue's post-processing upscale (enfugue-api.md §5.2). The PIL filters run as they are; ESRGAN and its anime
# variant run an installed spandrel model (`spandrel_image_to_image_autoscale`). GFPGAN (face restoration, which
# needs face detection and alignment around the model) is refused at submit.
PIL_UPSCALE_METHODS = ("lanczos", "bilinear", "bicubic", "nearest")
MODEL_UPSCALE_METHODS = ("esrgan", "esrganime", "gfpgan")
SPANDREL_UPSCALE_METHODS = ("esrgan", "esrganime")
UpscaleMethod = Literal["lanczos", "bilinear", "bicubic", "nearest", "esrgan", "esrganime"]
DEFAULT_UPSCALE_DIFFUSION_PROMPT = "highly detailed, ultra-detailed, intricate detail, high definition, HD, 4k, 8k UHD"


# Enfugue's `controlnet` names (enfugue-api.md §5.2); each maps to a repo (settings) and so to an installed model.
ControlNetName = Literal[
    "canny", "mlsd", "hed", "scribble", "tile", "inpaint", "depth", "normal", "pose", "pidi", "line", "anime",
]  # fmt: skip
CONTROLNET_NAMES: tuple[str, ...] = ControlNetName.__args__  # type: ignore[attr-defined]


class UpscalePass(BaseModel):
    """One pass: resize to `scale` times the generated size with `method`, then (when `steps` is set) img2img at
    `strength`. `scale` counts from the generated image (the size is resolved at submit, after the dialect)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scale: int = Field(ge=1)
    method: UpscaleMethod
    steps: int | None = None
    guidance_scale: float = 12.0
    strength: float = 0.2
    prompt: str = DEFAULT_UPSCALE_DIFFUSION_PROMPT
    prompt_2: str | None = None
    negative_prompt: str = ""
    negative_prompt_2: str | None = None
    # `upscale_diffusion_controlnet`: a ControlNet guiding the re-diffusion, whose control image is the upscaled
    # image itself (through the detector for canny; as it is for tile).
    controlnet: ControlNetName | None = None
    # `upscale_diffusion_chunking_size` / `_blur` for this pass as sent (None: Enfugue's size // 4) and whether
    # each grows with the pass number (services/enfugue_chunking.py upscale_stride); 0 turns chunking off.
    chunking_size: int | None = Field(default=None, ge=0)
    chunking_blur: int | None = Field(default=None, ge=0)
    scale_chunking_size: bool = True
    scale_chunking_blur: bool = True


class ControlInput(BaseModel):
    """A ControlNet input: the stored control image (`images/<name>`, fitted to its region), the Enfugue name of
    the controlnet, and whether the matching detector runs on the image first (`process`) or it is used as it is
    (`invert`: colours inverted, as Enfugue's `invert_control_image`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    controlnet: ControlNetName
    image: str
    conditioning_scale: float = 1.0
    process: bool = True
    invert: bool = False


class RegionNode(BaseModel):
    """One of Enfugue's canvas `nodes` (enfugue-api.md §5.3), resolved at submit: its image and mask are stored
    (fitted to w × h; mask in the engine's convention, white = keep) and its flags say what runs on it.
    `steps` / `guidance_scale` / refiner values None mean the request's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    x: int = 0
    y: int = 0
    w: int = Field(gt=0)
    h: int = Field(gt=0)
    prompt: str = ""
    prompt_2: str | None = None
    negative_prompt: str = ""
    negative_prompt_2: str | None = None
    image: str | None = None
    mask: str | None = None
    infer: bool = False
    inpaint: bool = False
    # The node's image as a ControlNet input (Enfugue's `control` flag with `controlnet` and its settings).
    control: ControlInput | None = None
    strength: float | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    refiner_strength: float | None = None
    refiner_guidance_scale: float | None = None
    refiner_aesthetic_score: float | None = None
    refiner_negative_aesthetic_score: float | None = None
    # Enfugue's per-node inpaint options, as GenerationRequest's (services/enfugue_inpaint_options.py). `mask_box`:
    # the (x, y, w, h) of the stored mask's repaint area in the region's (w, h), found at submit.
    inpaint_feather: int = Field(default=0, ge=0)
    crop_inpaint: bool = False
    scale_to_model_size: bool = False
    mask_box: tuple[int, int, int, int] | None = None


class GenerationRequest(BaseModel):
    """What the Diffusion replica needs, stored as the job's request JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = "txt2img"
    # None asks for the deployment's default model; the queue stores the resolved name.
    model: str | None = None
    # Enfugue's `model_type`: "checkpoint" names a main model, "model" a preset (`/api/models`); None infers it
    # from the name. The queue stores the resolved request: the main model's name, type "checkpoint".
    model_type: Literal["checkpoint", "model"] | None = None
    prompt: str = ""
    negative_prompt: str = ""
    prompt_2: str | None = None
    negative_prompt_2: str | None = None
    # A preset's prompts, added to the request's (Enfugue weights them 0.2; here they are appended).
    model_prompt: str | None = None
    model_negative_prompt: str | None = None
    # Enfugue's `size`: the default of width and height. None for all three means the model's native size
    # (512 for SD 1.x/2.x, 1024 for SDXL), resolved at submit.
    size: int | None = None
    width: int | None = None
    height: int | None = None
    # Enfugue's sliding-window diffusion of canvases larger than `size` (services/enfugue_chunking.py): the window
    # stride and edge feather in pixels; None means Enfugue's default (size // 8), 0 turns chunking off.
    chunking_size: int | None = None
    chunking_blur: int | None = None
    # Given explicitly (in `model_fields_set`), they win over a model preset's default configuration; left
    # unset, the preset's values apply, else these defaults.
    steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    seed: int = Field(default_factory=random_seed)
    num_images: int = 1
    scheduler: str | None = None
    # Models applied on top of the main one, by name or file name; resolved against the registry at submit.
    lora: list[WeightedModel] = Field(default_factory=list)
    lycoris: list[WeightedModel] = Field(default_factory=list)
    inversion: list[str] = Field(default_factory=list)
    vae: str | None = None
    # Image to image and inpainting: the names of input images already in object storage (`images/<name>`,
    # fitted to width × height), as the graph's `image` nodes load them. `mask` is in the engine's convention
    # (white = keep, black = repaint); `strength` None means Enfugue's default (0.8 img2img, 1.0 inpaint).
    image: str | None = None
    mask: str | None = None
    strength: float | None = None
    # Enfugue's inpaint and img2img options (services/enfugue_inpaint_options.py). The defaults here are today's
    # plain graph; the Enfugue dialect sends Enfugue's (feather 32, both flags true). `mask_box` is the bounding
    # box (x, y, w, h) of the mask's repaint area, found when the mask is stored (None: no mask, or nothing black).
    inpaint_feather: int = Field(default=0, ge=0)
    crop_inpaint: bool = False
    scale_to_model_size: bool = False
    mask_box: tuple[int, int, int, int] | None = None
    # Enfugue's `intermediates`: False turns the job's progress previews off (None/True: on).
    intermediates: bool | None = None
    # Enfugue's opaque UI `state`, written back into each result PNG (`EnfugueUIState`) and not used otherwise.
    state: Any = None
    # Enfugue's `upscale`/`outscale`: the passes applied to each sample, resolved from the request's per-pass
    # lists by the dialect (empty: no upscale). The last pass's scale is Enfugue's `outscale`.
    upscale: list[UpscalePass] = Field(default_factory=list)
    # SDXL refiner (enfugue-api.md §5.2): a model name resolved at submit like `model`; it denoises the last
    # `refiner_strength` of the schedule with its own prompts (None: the request's) and aesthetic scores.
    refiner: str | None = None
    refiner_size: int | None = None
    refiner_vae: str | None = None
    refiner_strength: float = 0.3
    refiner_guidance_scale: float = 5.0
    refiner_aesthetic_score: float = 6.0
    refiner_negative_aesthetic_score: float = 2.5
    refiner_prompt: str | None = None
    refiner_prompt_2: str | None = None
    refiner_negative_prompt: str | None = None
    refiner_negative_prompt_2: str | None = None
    # An inpainting model used instead of the main model for the inpaint steps.
    inpainter: str | None = None
    inpainter_size: int | None = None
    inpainter_vae: str | None = None
    # Single-step ControlNet (`control_image` with `controlnet`), used when `nodes` is empty.
    control: ControlInput | None = None
    # Canvas regions, run in order and composited (empty: one region covering the canvas, from the fields above).
    nodes: list[RegionNode] = Field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# The PNG text chunks Enfugue writes into each result (enfugue-api.md §5.3) and reads back in its UI.
GENERATION_DATA_CHUNK = "EnfugueGenerationData"
UI_STATE_CHUNK = "EnfugueUIState"
# Kept for clients of earlier serve-app versions: the request as stored, with the image's own seed.
SERVE_APP_CHUNK = "serve_app_metadata"


def enfugue_png_text(enfugue: dict[str, Any], position: int) -> dict[str, str]:
    """The text chunks of the `position`-th result of a request (`GenerationRequest.to_json()`): each image
    carries its own seed (seed + position); input images are redacted to their size, as Enfugue's plan is."""
    own = {**enfugue, "seed": enfugue["seed"] + position}
    state = own.pop("state", None)
    plan = {**own, **{key: {"width": own.get("width"), "height": own.get("height"), "mode": mode}
                      for key, mode in (("image", "RGB"), ("mask", "L")) if own.get(key) is not None}}  # fmt: skip
    if own.get("nodes"):
        plan["nodes"] = [_redacted_node(node) for node in own["nodes"]]
    text = {GENERATION_DATA_CHUNK: json.dumps(plan), SERVE_APP_CHUNK: json.dumps(own)}
    if state is not None:
        text[UI_STATE_CHUNK] = json.dumps(state)
    return text


def _redacted_node(node: dict[str, Any]) -> dict[str, Any]:
    """A canvas node of the plan with its images as their size (RegionNode's are fitted to w × h)."""
    size = {"width": node.get("w"), "height": node.get("h")}
    redacted = {**node, **{key: {**size, "mode": mode} for key, mode in (("image", "RGB"), ("mask", "L"))
                           if node.get(key) is not None}}  # fmt: skip
    if isinstance(node.get("control"), dict):
        redacted["control"] = {**node["control"], "image": {**size, "mode": "RGB"}}
    return redacted


class Limits(BaseModel):
    """Operator limits checked before anything is stored."""

    model_config = ConfigDict(frozen=True)

    max_width: int = 2048
    max_height: int = 2048
    max_pixels: int = 2048 * 2048
    max_steps: int = 150
    max_images_per_job: int = 16
    max_waiting_jobs: int = 256
    # Enfugue's canvas regions: each is one or more diffusion passes per image.
    max_nodes: int = 16

    def capped(self, request: GenerationRequest) -> GenerationRequest:
        """The request with each upscale pass's img2img steps at most `max_steps` (Enfugue's default of 100
        would otherwise be refused by most servers)."""
        if all(step.steps is None or step.steps <= self.max_steps for step in request.upscale):
            return request
        passes = [step if step.steps is None or step.steps <= self.max_steps else
                  step.model_copy(update={"steps": self.max_steps}) for step in request.upscale]  # fmt: skip
        return request.model_copy(update={"upscale": passes})

    def check(self, request: GenerationRequest) -> None:
        """Raise InvalidRequest naming the first field that breaks a limit (sizes must be resolved)."""
        if request.width is None or request.height is None:
            raise InvalidRequest("`width` and `height` must be resolved before checking limits", field="width")
        check_runnable(request)
        for field, value, limit in (
            ("width", request.width, self.max_width),
            ("height", request.height, self.max_height),
        ):
            if value > limit:
                raise InvalidRequest(f"`{field}` must be at most {limit}, got {value}", field=field)
        if request.width * request.height > self.max_pixels:
            raise InvalidRequest(
                f"`width` × `height` must be at most {self.max_pixels} pixels, got {request.width * request.height}",
                field="width",
            )
        if request.steps > self.max_steps:
            raise InvalidRequest(f"`steps` must be between 1 and {self.max_steps}, got {request.steps}", field="steps")
        if request.num_images > self.max_images_per_job:
            raise InvalidRequest(
                f"the number of images must be between 1 and {self.max_images_per_job}, got {request.num_images}",
                field="samples",
            )
        if request.upscale:
            width, height = request.width * request.upscale[-1].scale, request.height * request.upscale[-1].scale
            if width > self.max_width or height > self.max_height or width * height > self.max_pixels:
                raise InvalidRequest(
                    f"The upscaled size {width}×{height} is over this server's limits (at most "
                    f"{self.max_width}×{self.max_height}, {self.max_pixels} pixels)",
                    field="outscale",
                )
        if request.guidance_scale > 100.0:
            raise InvalidRequest(
                f"`guidance_scale` must be between 0 and 100, got {request.guidance_scale}", field="guidance_scale"
            )
        _check_nodes(request, self)


def _check_nodes(request: GenerationRequest, limits: Limits) -> None:
    """Each canvas region within the limits of an image and on the canvas (one wholly outside it would only
    waste the work of making it)."""
    assert request.width is not None and request.height is not None
    if len(request.nodes) > limits.max_nodes:
        raise InvalidRequest(f"At most {limits.max_nodes} nodes are supported, got {len(request.nodes)}",
                             field="nodes")  # fmt: skip
    for number, node in enumerate(request.nodes):
        where = f"`nodes[{number}]`"
        if node.w > limits.max_width or node.h > limits.max_height or node.w * node.h > limits.max_pixels:
            raise InvalidRequest(f"{where} is {node.w}×{node.h}, over this server's limits (at most "
                                 f"{limits.max_width}×{limits.max_height}, {limits.max_pixels} pixels)",
                                 field="nodes")  # fmt: skip
        if node.x >= request.width or node.y >= request.height or node.x + node.w <= 0 or node.y + node.h <= 0:
            raise InvalidRequest(f"{where} lies outside the {request.width}×{request.height} canvas", field="nodes")
        steps = request.steps if node.steps is None else node.steps
        if not 1 <= steps <= limits.max_steps:
            raise InvalidRequest(f"{where}: `inference_steps` must be between 1 and {limits.max_steps}, got {steps}",
                                 field="nodes")  # fmt: skip


def check_runnable(request: GenerationRequest) -> None:
    """Raise InvalidRequest naming the first field no pipeline could run with, whatever the limits.

    Shared by the queue (before anything is stored) and the runner (before anything is loaded)."""
    for name, value in (("width", request.width), ("height", request.height)):
        # The VAE downsamples by 8: any other size would be silently cropped. None means native size.
        if value is not None and (value < 8 or value % 8):
            raise InvalidRequest(f"`{name}` must be a positive multiple of 8, got {value}", field=name)
    if request.steps < 1:
        raise InvalidRequest(f"`steps` must be at least 1, got {request.steps}", field="steps")
    if request.num_images < 1:
        raise InvalidRequest(f"`num_images` must be at least 1, got {request.num_images}", field="num_images")
    if not 0 <= request.seed <= MAX_SEED:
        raise InvalidRequest(f"`seed` must be between 0 and {MAX_SEED}, got {request.seed}", field="seed")
    if request.guidance_scale < 0:
        raise InvalidRequest(
            f"`guidance_scale` must not be negative, got {request.guidance_scale}", field="guidance_scale"
        )
    if request.strength is not None and not 0 <= request.strength <= 1:
        raise InvalidRequest(f"`strength` must be between 0 and 1, got {request.strength}", field="strength")
    if request.mask is not None and request.image is None:
        raise InvalidRequest("`mask` needs an `image` to inpaint", field="mask")
    for step in request.upscale:
        if step.steps is not None and step.steps < 1:
            raise InvalidRequest(f"`upscale_diffusion_steps` must be at least 1, got {step.steps}",
                                 field="upscale_diffusion_steps")  # fmt: skip
        if not 0 <= step.strength <= 1:
            raise InvalidRequest(f"`upscale_diffusion_strength` must be between 0 and 1, got {step.strength}",
                                 field="upscale_diffusion_strength")  # fmt: skip
    if request.scheduler is not None and request.scheduler not in SCHEDULER_NAMES:
        raise InvalidRequest(f"Unknown scheduler {request.scheduler}", field="scheduler")
