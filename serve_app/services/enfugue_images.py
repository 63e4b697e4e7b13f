"""Enfugue's inline input images (`image`, `mask` as data URLs) made ready for the graph engine.

Enfugue sends images inline and fits them to the canvas itself (enfugue-api.md §5.2, §5.4). Here they are decoded
under upload limits before anything is stored, fitted to width × height with `fit`/`anchor`, and stored as
`images/<name>` objects: the key a graph's `image` node loads (inference/graph_context.load_image), so the
replica reads them like any InvokeAI image. They are inputs, not results: no image row is written, and they are
named `<hex>_input.png` / `<hex>_mask.png` so the result-file route (`<uuid>_<i>.png`) never serves them.

Masks: Enfugue paints white where it should repaint; the engine keeps white (inference/nodes/masks.py), so the
stored mask is inverted. As Enfugue, the area the fitted image leaves empty (or transparent) is repainted too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image, ImageChops, ImageOps

from serve_app.domain.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from serve_app.domain.generation import GenerationRequest
from serve_app.domain.images import image_key
from serve_app.domain.imaging import DecodeLimits, decode_upload, encode_png
from serve_app.domain.ports import ObjectStore
from serve_app.services.enfugue_control import ControlImage, check_control, control_input
from serve_app.services.enfugue_inpaint_options import mask_box

Fit = Literal["actual", "stretch", "cover", "contain"]
FITS: tuple[str, ...] = ("actual", "stretch", "cover", "contain")
ANCHORS: tuple[str, ...] = tuple(f"{v}-{h}" for v in ("top", "center", "bottom") for h in ("left", "center", "right"))

_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?:;[\w.+-]+=[\w.+-]+)*;base64,(?P<data>.*)$", re.DOTALL)
# The empty part of a fitted image: neutral grey, repainted anyway (it is in the mask).
_FILL = (127, 127, 127)


@dataclass(frozen=True)
class InputLimits:
    """What an inline image may be: encoded bytes (413 beyond), pixels (checked from the header) and canvas."""

    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 64 * 1024 * 1024
    max_canvas_pixels: int = 4096 * 4096


@dataclass(frozen=True)
class ImageInputs:
    """The image parameters of one Enfugue request, as sent."""

    image: str | None = None
    mask: str | None = None
    fit: str | None = None
    anchor: str | None = None
    invert_mask: bool = False
    # Enfugue's canvas `nodes` as sent (services/enfugue_region_inputs.py); with them, image and mask are ignored.
    nodes: list[Any] | None = None
    # `control_image` and its ControlNet keys (services/enfugue_control.py), single-step only.
    control: ControlImage | None = None


@dataclass(frozen=True)
class PreparedInputs:
    """The request naming its stored inputs, and their keys (to delete them if the submit fails)."""

    request: GenerationRequest
    keys: list[str]


def input_keys(request: dict[str, Any]) -> list[str]:
    """The keys of a stored job's inline inputs (its `request`, as stored), to delete them with it."""
    enfugue = request.get("enfugue")
    names = [enfugue.get(key) for key in ("image", "mask")] if isinstance(enfugue, dict) else []
    nodes = enfugue.get("nodes") if isinstance(enfugue, dict) else None
    names += [node.get(key) for node in nodes or [] if isinstance(node, dict) for key in ("image", "mask")]
    control = enfugue.get("control") if isinstance(enfugue, dict) else None
    names += [control.get("image")] if isinstance(control, dict) else []
    return [image_key(name) for name in names if isinstance(name, str)]


def decode_data_url(value: str, field: str, limits: InputLimits) -> Image.Image:
    """The image of a `data:image/...;base64,` URL: 413 when larger than `limits.max_bytes`, 400 for anything that
    is not such a URL of a readable image (server-side paths, which Enfugue also takes, are refused)."""
    match = _DATA_URL.match(value)
    if match is None:
        raise InvalidRequest(f"`{field}` must be a base64 data URL of an image", field=field)
    payload = match["data"]
    # Checked on the encoded length (3 bytes per 4 characters) so an oversized payload is never decoded.
    if len(payload) // 4 * 3 > limits.max_bytes:
        raise PayloadTooLarge(f"`{field}` is larger than {limits.max_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"`{field}` is not valid base64", field=field) from None
    try:
        decoded = decode_upload(data, DecodeLimits(max_pixels=limits.max_pixels))
    except UnsupportedMediaType:
        raise InvalidRequest(f"`{field}` is not a readable image", field=field) from None
    except InvalidRequest as exc:
        raise InvalidRequest(f"`{field}`: {exc}", field=field) from None
    return decoded.image


def fit_image(image: Image.Image, width: int, height: int, fit: str | None, anchor: str | None) -> Image.Image:
    """`image` on a transparent width × height RGBA canvas (enfugue-api.md §5.4): `actual`/None at its own size,
    `stretch` resized exactly, `contain` scaled to fit inside, `cover` scaled to fill and cropped; `anchor`
    (default top-left, as Enfugue) places it on the free axis or picks the part that is kept."""
    source = image.convert("RGBA")
    if fit == "stretch":
        return source.resize((width, height), Image.Resampling.LANCZOS)
    if fit in ("contain", "cover"):
        pick = min if fit == "contain" else max
        scale = pick(width / source.width, height / source.height)
        size = (max(round(source.width * scale), 1), max(round(source.height * scale), 1))
        source = source.resize(size, Image.Resampling.LANCZOS)
    elif fit not in (None, "actual"):
        raise InvalidRequest(f"Unknown fit {fit}", field="fit")
    vertical, horizontal = (anchor or "top-left").split("-")
    x = {"left": 0, "center": (width - source.width) // 2, "right": width - source.width}[horizontal]
    y = {"top": 0, "center": (height - source.height) // 2, "bottom": height - source.height}[vertical]
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    canvas.paste(source, (x, y))  # A negative offset crops (`cover`, or `actual` for a larger image).
    return canvas


def engine_mask(fitted: Image.Image, user_mask: Image.Image | None, invert_mask: bool) -> Image.Image | None:
    """The engine's mask (L, white = keep) for a fitted RGBA image and an optional fitted Enfugue mask (white =
    repaint, or keep with `invert_mask`); None when nothing is to be repainted and no mask was given."""
    # Transparent pixels (or the empty area left by the fit) are outpainted, as Enfugue does.
    repaint = ImageOps.invert(fitted.getchannel("A"))
    if user_mask is not None:
        # The user's mask outside its own fitted area counts as "keep"; its transparency too.
        gray = Image.new("L", user_mask.size, 0)
        gray.paste(user_mask.convert("L"), (0, 0), user_mask.getchannel("A"))
        painted = ImageOps.invert(gray) if invert_mask else gray
        repaint = ImageChops.lighter(repaint, painted)
    elif repaint.getbbox() is None:
        return None
    return ImageOps.invert(repaint)


async def prepare_inputs(
    request: GenerationRequest, inputs: ImageInputs, store: ObjectStore, limits: InputLimits | None = None
) -> PreparedInputs:
    """Decode, check and fit the inline images, store them, and name them in the request. Nothing is stored
    unless every image decodes and the canvas is valid; without images the request is returned unchanged."""
    limits = limits or InputLimits()
    if inputs.nodes:
        # Imported here: that module builds on this one's decoding and fitting.
        from serve_app.services.enfugue_region_inputs import prepare_nodes

        return await prepare_nodes(request, inputs, store, limits)
    if inputs.mask is not None and inputs.image is None:
        raise InvalidRequest("`mask` needs an `image` to inpaint", field="mask")
    check_control(inputs.control)
    if inputs.image is None:
        return await _with_control(PreparedInputs(request, []), inputs, store, limits)
    # Decoding and resampling take CPU time: off the event loop.
    width, height, image, mask = await asyncio.to_thread(_pictures, request, inputs, limits)
    stem = uuid.uuid4().hex
    objects = {f"{stem}_input.png": image} | ({} if mask is None else {f"{stem}_mask.png": mask})
    keys: list[str] = []
    try:
        for name, png in objects.items():
            keys.append(image_key(name))
            await store.put(keys[-1], png, "image/png")
    except BaseException:
        await store.delete(keys)
        raise
    names = {"image": f"{stem}_input.png", "mask": None if mask is None else f"{stem}_mask.png"}
    # The repaint area's box, for crop_inpaint (services/enfugue_inpaint_options.py).
    box = None if mask is None else await asyncio.to_thread(mask_box, mask)
    updated = request.model_copy(update={**names, "width": width, "height": height, "mask_box": box})
    return await _with_control(PreparedInputs(updated, keys), inputs, store, limits)


async def _with_control(
    prepared: PreparedInputs, inputs: ImageInputs, store: ObjectStore, limits: InputLimits
) -> PreparedInputs:
    """`prepared` plus the control image, fitted to the canvas like `image` (which sets the canvas when given)
    and stored as `<hex>_control.png`; the earlier inputs are deleted again if this fails."""
    if inputs.control is None:
        return prepared
    name = f"{uuid.uuid4().hex}_control.png"
    keys = [*prepared.keys, image_key(name)]
    try:
        width, height, png = await asyncio.to_thread(_control_picture, prepared.request, inputs.control.image,
                                                     inputs, limits)  # fmt: skip
        await store.put(keys[-1], png, "image/png")
    except BaseException:
        await store.delete(keys)
        raise
    update = {"control": control_input(inputs.control, name), "width": width, "height": height}
    return PreparedInputs(prepared.request.model_copy(update=update), keys)


def _control_picture(
    request: GenerationRequest, data_url: str, inputs: ImageInputs, limits: InputLimits
) -> tuple[int, int, bytes]:
    """(width, height, PNG) of the control image on the canvas; without a canvas size its own sets it."""
    image = decode_data_url(data_url, "control_image", limits)
    width = request.width or -(-image.width // 8) * 8
    height = request.height or -(-image.height // 8) * 8
    for name, value in (("width", width), ("height", height)):
        if value < 8 or value % 8:
            raise InvalidRequest(f"`{name}` must be a positive multiple of 8, got {value}", field=name)
    if width * height > limits.max_canvas_pixels:
        raise InvalidRequest(f"`width` × `height` must be at most {limits.max_canvas_pixels} pixels", field="width")
    fitted = fit_image(image, width, height, inputs.fit, inputs.anchor)
    # Where the fitted image leaves the canvas empty there is nothing to follow: black (no edges, no detail).
    flat = Image.new("RGB", fitted.size, (0, 0, 0))
    flat.paste(fitted, (0, 0), fitted.getchannel("A"))
    return width, height, encode_png(flat, {})


def _pictures(
    request: GenerationRequest, inputs: ImageInputs, limits: InputLimits
) -> tuple[int, int, bytes, bytes | None]:
    """(width, height, input PNG, engine mask PNG or None) of a request with an `image`."""
    assert inputs.image is not None
    image = decode_data_url(inputs.image, "image", limits)
    mask = None if inputs.mask is None else decode_data_url(inputs.mask, "mask", limits)
    # Without a canvas size the image's own sets it, rounded up to a multiple of 8 (as Enfugue).
    width = request.width or -(-image.width // 8) * 8
    height = request.height or -(-image.height // 8) * 8
    for name, value in (("width", width), ("height", height)):
        if value < 8 or value % 8:
            raise InvalidRequest(f"`{name}` must be a positive multiple of 8, got {value}", field=name)
    if width * height > limits.max_canvas_pixels:
        raise InvalidRequest(f"`width` × `height` must be at most {limits.max_canvas_pixels} pixels", field="width")
    fitted = fit_image(image, width, height, inputs.fit, inputs.anchor)
    fitted_mask = None if mask is None else fit_image(mask, width, height, inputs.fit, inputs.anchor)
    keep = engine_mask(fitted, fitted_mask, inputs.invert_mask)
    flat = Image.new("RGB", fitted.size, _FILL)
    flat.paste(fitted, (0, 0), fitted.getchannel("A"))
    return width, height, encode_png(flat, {}), None if keep is None else encode_png(keep, {})
