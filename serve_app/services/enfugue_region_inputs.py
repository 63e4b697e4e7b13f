"""Enfugue's canvas `nodes` (enfugue-api.md §5.3) checked, their images stored, as the request's RegionNodes.

Each node is checked first (shape, flags, sizes), then every image and mask is decoded and fitted, and only
then is anything stored: a bad node anywhere stores nothing. A node's image is fitted to its (w, h) (default:
the image's size rounded up to a multiple of 8) with `fit`/`anchor` as the single-step image is
(services/enfugue_images.py), and stored as `<hex>_node<n>_input.png`: RGBA where it has transparency (the area
empty after fitting included, filled grey underneath for the VAE), RGB otherwise. Its mask, in the engine's
convention (white = keep), is stored when it has such gaps or is an `inpaint` node with a `mask`; its repaint
area's box (`mask_box`) is found here, where its pixels are at hand, for `crop_inpaint`.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import ControlInput, ControlNetName, GenerationRequest, RegionNode
from serve_app.domain.images import image_key
from serve_app.domain.imaging import encode_png
from serve_app.domain.ports import ObjectStore
from serve_app.services.enfugue_images import (
    ANCHORS,
    ImageInputs,
    InputLimits,
    PreparedInputs,
    decode_data_url,
    engine_mask,
    fit_image,
)
from serve_app.services.enfugue_inpaint_options import Box, mask_box

# Each node is one or more diffusion passes per output image: a bound on the work one request asks for.
MAX_NODES = 16
_FILL = (127, 127, 127)


class NodeBody(BaseModel):
    """One node as Enfugue's UI sends it. Unknown keys (`type`, `inpaint_controlnet`, ...) are ignored, as in
    Enfugue. `inpaint_feather`, `crop_inpaint` and `scale_to_model_size` run on inpaint regions
    (services/enfugue_inpaint_options.py)."""

    model_config = ConfigDict(extra="ignore")

    x: int = 0
    y: int = 0
    w: int | None = Field(default=None, gt=0)
    h: int | None = Field(default=None, gt=0)
    prompt: str | None = None
    prompt_2: str | None = None
    negative_prompt: str | None = None
    negative_prompt_2: str | None = None
    image: str | None = None
    mask: str | None = None
    infer: bool = False
    inpaint: bool = False
    control: bool = False
    controlnet: ControlNetName | None = None
    conditioning_scale: float = Field(default=1.0, ge=-1, le=2)  # InvokeAI's bounds on a ControlNet weight
    process_control_image: bool = True
    invert: bool = False
    strength: float | None = Field(default=None, ge=0, le=1)
    invert_mask: bool = False
    fit: Literal["actual", "stretch", "cover", "contain"] | None = None
    anchor: str | None = None
    remove_background: bool = False
    # Enfugue's defaults (services/enfugue_inpaint_options.py).
    crop_inpaint: bool = True
    inpaint_feather: int = Field(default=32, ge=0)
    scale_to_model_size: bool = True
    inference_steps: int | None = Field(default=None, ge=1)
    guidance_scale: float | None = Field(default=None, ge=0)
    refiner_strength: float | None = Field(default=None, ge=0, le=1)
    refiner_guidance_scale: float | None = Field(default=None, ge=0)
    refiner_aesthetic_score: float | None = None
    refiner_negative_aesthetic_score: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _blanks(cls, data: Any) -> Any:
        # The UI sends "" (and null) for a field left empty: the default, except for the texts.
        texts = ("prompt", "prompt_2", "negative_prompt", "negative_prompt_2")
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if key in texts or value not in ("", None)}
        return data


def parse_nodes(raw: list[Any]) -> list[NodeBody]:
    """The nodes checked for everything that does not need their images; InvalidRequest naming the node."""
    if len(raw) > MAX_NODES:
        raise InvalidRequest(f"At most {MAX_NODES} nodes are supported, got {len(raw)}", field="nodes")
    bodies = []
    for number, item in enumerate(raw):
        where = f"nodes[{number}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"`{where}` must be an object", field="nodes")
        try:
            body = NodeBody.model_validate(item)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'node'}: {e['msg']}" for e in exc.errors())
            raise InvalidRequest(f"`{where}`: {detail}", field="nodes") from None
        _check(body, where)
        bodies.append(body)
    return bodies


def _check(body: NodeBody, where: str) -> None:
    if body.image is None and not (body.prompt or "").strip():
        # Enfugue's own message (a 500 there).
        raise InvalidRequest(f"Can't assemble a node from arguments (`{where}` has neither `image` nor `prompt`)",
                             field="nodes")  # fmt: skip
    if body.image is None:
        flags = [name for name in ("infer", "inpaint", "control") if getattr(body, name)]
        if flags:
            raise InvalidRequest(f"`{where}`: `{flags[0]}` needs an `image`", field="nodes")
        if body.w is None or body.h is None:
            raise InvalidRequest(f"`{where}`: `w` and `h` are required for a node without an `image`", field="nodes")
    if body.control and body.controlnet is None:
        raise InvalidRequest(f"`{where}`: `control` needs a `controlnet`", field="nodes")
    if body.anchor is not None and body.anchor not in ANCHORS:
        raise InvalidRequest(f"`{where}`: unknown anchor {body.anchor}", field="nodes")
    if body.remove_background:
        raise InvalidRequest("No background-removal model is installed", field="remove_background")


async def prepare_nodes(
    request: GenerationRequest, inputs: ImageInputs, store: ObjectStore, limits: InputLimits
) -> PreparedInputs:
    """The request with its `nodes` (RegionNodes naming their stored images) and the stored keys; the
    single-step `image`/`mask` are ignored with nodes, as Enfugue does."""
    bodies = parse_nodes(inputs.nodes or [])
    # Decoding and resampling take CPU time: off the event loop.
    pictures = await asyncio.to_thread(lambda: [_pictures(body, n, limits) for n, body in enumerate(bodies)])
    stem = uuid.uuid4().hex
    regions: list[RegionNode] = []
    keys: list[str] = []
    try:
        for number, (body, (width, height, image, mask, box)) in enumerate(zip(bodies, pictures, strict=True)):
            names: dict[str, str | None] = {"image": None, "mask": None}
            for kind, png in (("image", image), ("mask", mask)):
                if png is not None:
                    name = names[kind] = f"{stem}_node{number}_{'input' if kind == 'image' else 'mask'}.png"
                    keys.append(image_key(name))
                    await store.put(keys[-1], png, "image/png")
            regions.append(_region(body, width, height, names["image"], names["mask"], box))
    except BaseException:
        await store.delete(keys)
        raise
    return PreparedInputs(request.model_copy(update={"nodes": regions}), keys)


def _region(
    body: NodeBody, width: int, height: int, image: str | None, mask: str | None, box: Box | None
) -> RegionNode:
    control = None
    if body.control and body.controlnet is not None and image is not None:
        control = ControlInput(controlnet=body.controlnet, image=image, conditioning_scale=body.conditioning_scale,
                               process=body.process_control_image, invert=body.invert)  # fmt: skip
    return RegionNode(
        x=body.x,
        y=body.y,
        w=width,
        h=height,
        prompt=body.prompt or "",
        prompt_2=body.prompt_2 or None,
        negative_prompt=body.negative_prompt or "",
        negative_prompt_2=body.negative_prompt_2 or None,
        image=image,
        mask=mask,
        infer=body.infer,
        inpaint=body.inpaint,
        control=control,
        strength=body.strength,
        steps=body.inference_steps,
        guidance_scale=body.guidance_scale,
        refiner_strength=body.refiner_strength,
        refiner_guidance_scale=body.refiner_guidance_scale,
        refiner_aesthetic_score=body.refiner_aesthetic_score,
        refiner_negative_aesthetic_score=body.refiner_negative_aesthetic_score,
        crop_inpaint=body.crop_inpaint,
        inpaint_feather=body.inpaint_feather,
        scale_to_model_size=body.scale_to_model_size,
        mask_box=box,
    )


def _pictures(
    body: NodeBody, number: int, limits: InputLimits
) -> tuple[int, int, bytes | None, bytes | None, Box | None]:
    """(w, h, the fitted image PNG or None, the engine mask PNG or None, the mask's repaint box) of one node."""
    where = f"nodes[{number}]"
    image = None if body.image is None else decode_data_url(body.image, f"{where}.image", limits)
    width = body.w or (-(-image.width // 8) * 8 if image is not None else 0)
    height = body.h or (-(-image.height // 8) * 8 if image is not None else 0)
    if width * height > limits.max_canvas_pixels:
        raise InvalidRequest(f"`{where}`: `w` × `h` must be at most {limits.max_canvas_pixels} pixels",
                             field="nodes")  # fmt: skip
    if image is None:
        return width, height, None, None, None
    user_mask = None
    if body.inpaint and body.mask is not None:
        decoded = decode_data_url(body.mask, f"{where}.mask", limits)
        user_mask = fit_image(decoded, width, height, body.fit, body.anchor)
    fitted = fit_image(image, width, height, body.fit, body.anchor)
    keep = engine_mask(fitted, user_mask, body.invert_mask)
    alpha = fitted.getchannel("A")
    stored = Image.new("RGB", fitted.size, _FILL)
    # Fully transparent pixels are grey underneath (what the VAE sees there); the rest keep their colour.
    stored.paste(fitted.convert("RGB"), (0, 0), alpha.point(lambda value: 255 if value else 0))
    if alpha.getextrema() != (255, 255):
        stored.putalpha(alpha)
    mask = None if keep is None else encode_png(keep, {})
    return width, height, encode_png(stored, {}), mask, None if mask is None else mask_box(mask)
