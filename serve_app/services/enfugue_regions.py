"""Enfugue's canvas `nodes` (enfugue-api.md §5.3) as a node graph, and the inpaint paste-back both paths share.

Per output image i (seed + i) a transparent RGBA canvas (`blank_image`) receives each region in list order: a
region with only a prompt is a txt2img at its size (rounded up to multiples of 8); an image without flags is
pasted as it is (its transparency kept); `infer` is an img2img from the image (an image with gaps has them
inpainted first, as Enfugue's in-place outpaint); `inpaint` repaints the stored mask (white = keep) and pastes
the result back onto the image, so only the repainted area changes (with the region's `inpaint_feather`, and
with `crop_inpaint` / `scale_to_model_size` only the mask's box is diffused, scaled up when small, and pasted
back in place: services/enfugue_inpaint_options.py `region_frame`); `control` feeds the image to a ControlNet
(txt2img, or with the other flags). The result is resized to (w, h) when rounding changed it and pasted at
(x, y) with `img_paste(crop=True)`, so a region past the edge is cropped. The global prompt joins the prompts
of regions with an image only. When the regions leave part of the canvas uncovered and the request has a global
prompt, a final inpaint fills it (prompt: every region's plus the global one); otherwise it stays transparent.

The node images were stored at submit (services/enfugue_region_inputs.py) fitted to w × h, RGBA with their
transparency, and `mask` set when the node has gaps or an inpaint mask. Prompt, image, latents, mask and
control nodes are made once per region and shared by every output image.

`build` returns the diffusion steps it made (each region's denoise, a gap fill's, the final outpaint's) for
services/enfugue_refiner.py: the inpaint steps (inpaint regions, gap fills, the outpaint) run on the inpainter
when the request has one, and each step gets the refiner pass with its region's refiner overrides (the
outpaint: the request's), the region's prompts as the refiner's when the request names no refiner prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import GenerationRequest, RegionNode
from serve_app.domain.graph.invocations import SEED_MAX
from serve_app.services.enfugue_inpaint_options import Box, feathered_region_mask, region_frame
from serve_app.services.enfugue_refiner import DiffusionStep, RefinerSettings
from serve_app.services.enfugue_upscale import EdgeFn, NodeFn, UpscaleBuilder

if TYPE_CHECKING:
    from serve_app.services.generation_graphs import GraphModel

# `control_node(node, edge, control, model, *, prefix, width, height) -> id` of services/enfugue_control.py: the
# node whose `control` output feeds denoise_latents' `control` input.
ControlFn = Callable[..., str]

# Enfugue's default strengths: img2img 0.8, inpaint (and the gap inpaint before an img2img) 1.0.
INFER_STRENGTH = 0.8
INPAINT_STRENGTH = 1.0
_TRANSPARENT = {"r": 0, "g": 0, "b": 0, "a": 0}


def paste_back(
    node: NodeFn, edge: EdgeFn, decoded: str, image: str | None, mask: str | None, final: bool, index: int
) -> str:
    """A single-step inpaint's sample `index`: the decoded image pasted onto the stored input `image` through
    the stored engine `mask` (img_paste lands its image where the mask is black: the repainted area). `final`:
    this is the saved output `output_<index>`; otherwise an intermediate step the upscale passes start from.
    Without a mask (no inpaint) the decoded image as it is."""
    if mask is None or image is None:
        return decoded
    pasted = node(f"output_{index}" if final else f"pasted_{index}", "img_paste", is_intermediate=not final,
                  base_image={"image_name": image}, mask={"image_name": mask})  # fmt: skip
    edge(decoded, "image", pasted, "image")
    return pasted


def prompt_nodes(
    node: NodeFn,
    edge: EdgeFn,
    sources: Mapping[str, str],
    sdxl: bool,
    ids: tuple[str, str],
    positive: tuple[str, str | None],
    negative: tuple[str, str | None],
    width: int,
    height: int,
) -> tuple[str, str]:
    """The positive and negative prompt encodings (`compel`, or `sdxl_compel_prompt` at width × height with the
    `_2` text as style) on the loader chain's text encoders; returns their ids."""
    for node_id, (text, text_2) in zip(ids, (positive, negative), strict=True):
        if sdxl:
            node(node_id, "sdxl_compel_prompt", prompt=text, style=text_2 or text, original_width=width,
                 original_height=height, target_width=width, target_height=height)  # fmt: skip
            edge(sources["clip2"], "clip2", node_id, "clip2")
        else:
            node(node_id, "compel", prompt=text)
        edge(sources["clip"], "clip", node_id, "clip")
    return ids


def drop_nodes(nodes: dict[str, dict[str, Any]], edges: list[dict[str, Any]], ids: Sequence[str]) -> None:
    """Remove nodes nothing uses (and the edges into them), so the engine does not run them."""
    for node_id in ids:
        nodes.pop(node_id, None)
    edges[:] = [item for item in edges if item["destination"]["node_id"] not in ids]


def round8(value: int) -> int:
    return -(-value // 8) * 8


def join(*parts: str | None) -> str:
    return ", ".join(part.strip() for part in parts if part and part.strip())


def is_pass_through(region: RegionNode) -> bool:
    """An image pasted as it is: no flag, or an inpaint with nothing to repaint."""
    if region.image is None or region.infer or region.control is not None:
        return False
    return not region.inpaint or region.mask is None


def covers_canvas(request: GenerationRequest) -> bool:
    """Whether the opaque regions cover the whole canvas (a pass-through image with gaps covers nothing for
    sure). Coordinate compression: every cell between the regions' edges is checked once."""
    assert request.width is not None and request.height is not None
    width, height = request.width, request.height
    boxes = [(max(r.x, 0), max(r.y, 0), min(r.x + r.w, width), min(r.y + r.h, height)) for r in request.nodes
             if not (is_pass_through(r) and r.mask is not None)]  # fmt: skip
    xs = sorted({0, width, *(b[0] for b in boxes), *(b[2] for b in boxes)} & set(range(width + 1)))
    ys = sorted({0, height, *(b[1] for b in boxes), *(b[3] for b in boxes)} & set(range(height + 1)))
    for left, right in zip(xs, xs[1:], strict=False):
        for top, bottom in zip(ys, ys[1:], strict=False):
            if not any(b[0] <= left and right <= b[2] and b[1] <= top and bottom <= b[3] for b in boxes):
                return False
    return True


@dataclass
class _Shared:
    """The nodes of one region that every output image uses."""

    width: int  # the diffusion size (w, h rounded up to multiples of 8)
    height: int
    prefix: str  # its nodes' id prefix, `region_<number>`
    positive: str = ""
    negative: str = ""
    # The (text, `_2` text) its positive and negative encodings were made from (the refiner's, unless set).
    texts: tuple[tuple[str, str | None], tuple[str, str | None]] = (("", None), ("", None))
    image: str = ""  # the stored image at (w, h)
    image8: str = ""  # ... at the diffusion size
    mask8: str = ""
    latents: str = ""
    denoise_mask: str = ""
    control: str = ""
    alpha: str = ""  # the image's opaque area as img_paste reads it (black = paste)
    # An inpaint's crop_inpaint / scale_to_model_size (`_frame`): the box of image8 it diffuses and pastes back
    # (default: all of it), the size it diffuses at, and the mask it is pasted back through (default: mask8).
    box: Box = (0, 0, 0, 0)
    diffusion: tuple[int, int] = (0, 0)
    paste_mask: str = ""


@dataclass
class RegionGraph:
    """Adds a region request's canvases to a generation graph, with its `node`/`edge` helpers and the handles
    its loader chain provides (the last LoRA's `unet`/`clip`/`clip2`, the decoder's `vae`)."""

    node: NodeFn
    edge: EdgeFn
    request: GenerationRequest
    scheduler: str
    sources: dict[str, str]
    decoder: str
    sdxl: bool
    controlnets: Mapping[str, GraphModel] = field(default_factory=dict)
    control_node: ControlFn | None = None
    # The model's native size, or the request's `size`: what crop_inpaint / scale_to_model_size aim at.
    size: int = 512
    steps: list[DiffusionStep] = field(default_factory=list)

    def build(self, metadata: str, upscale: UpscaleBuilder | None) -> list[DiffusionStep]:
        """Add every output image's canvas; returns the diffusion steps made (for the refiner and inpainter)."""
        request = self.request
        assert request.width is not None and request.height is not None
        shared = [self._shared(number, region) for number, region in enumerate(request.nodes)]
        outpaint = bool(request.prompt.strip()) and not covers_canvas(request)
        for index in range(request.num_images):
            seed = (request.seed + index) % (SEED_MAX + 1)
            canvas = self.node(f"canvas_{index}", "blank_image", width=request.width, height=request.height,
                               mode="RGBA", color=_TRANSPARENT)  # fmt: skip
            for number, region in enumerate(request.nodes):
                last = number == len(request.nodes) - 1 and not outpaint and upscale is None
                result, alpha = self._result(number, region, shared[number], index, seed)
                canvas = self._paste(canvas, result, alpha, region.x, region.y, node_id=f"output_{index}" if last
                                     else f"region_{number}_{index}_canvas", final=last)  # fmt: skip
            if outpaint:
                canvas = self._outpaint(canvas, index, seed, final=upscale is None)
            if upscale is None:
                self.edge(metadata, "metadata", canvas, "metadata")
            else:
                upscale.add(canvas, index=index, seed=request.seed + index, output=f"output_{index}",
                            metadata=metadata)  # fmt: skip
        return self.steps

    # -- per region ---------------------------------------------------------------------------------------------

    def _shared(self, number: int, region: RegionNode) -> _Shared:
        node, edge = self.node, self.edge
        prefix = f"region_{number}"
        shared = _Shared(round8(region.w), round8(region.h), prefix)
        shared.box, shared.diffusion = (0, 0, shared.width, shared.height), (shared.width, shared.height)
        if region.image is not None:
            shared.image = node(f"{prefix}_image", "image", image={"image_name": region.image})
            shared.image8 = self._resized(shared.image, f"{prefix}_image8", region, shared)
            if region.mask is not None:
                mask = node(f"{prefix}_mask_image", "image", image={"image_name": region.mask})
                shared.mask8 = self._resized(mask, f"{prefix}_mask8", region, shared)
                # An inpaint's `inpaint_feather` (services/enfugue_inpaint_options.py).
                shared.mask8 = feathered_region_mask(node, edge, shared.mask8, prefix, region)
                shared.paste_mask = shared.mask8
            if is_pass_through(region):
                if region.mask is not None:
                    shared.alpha = node(f"{prefix}_alpha", "tomask", invert=True)
                    edge(shared.image, "image", shared.alpha, "image")
                return shared
        image_prompts = region.image is not None
        request = self.request
        shared.texts = (
            (join(region.prompt, request.prompt if image_prompts else None),
             join(region.prompt_2, request.prompt_2 if image_prompts else None) or None),
            (join(region.negative_prompt, request.negative_prompt if image_prompts else None),
             join(region.negative_prompt_2, request.negative_prompt_2 if image_prompts else None) or None),
        )  # fmt: skip
        shared.positive, shared.negative = self._prompts(prefix, *shared.texts, shared.width, shared.height)
        # What the region diffuses: image8 and mask8, or their crop / scaled copies.
        source, source_mask = self._frame(region, shared) if region.image is not None else ("", "")
        if region.image is not None and (region.infer or region.inpaint):
            shared.latents = node(f"{prefix}_latents", "i2l")
            edge(source, "image", shared.latents, "image")
            edge(self.decoder, "vae", shared.latents, "vae")
        if shared.mask8:
            shared.denoise_mask = node(f"{prefix}_denoise_mask", "create_denoise_mask")
            edge(source, "image", shared.denoise_mask, "image")
            edge(source_mask, "image", shared.denoise_mask, "mask")
            edge(self.decoder, "vae", shared.denoise_mask, "vae")
        if region.control is not None:
            model = self.controlnets.get(region.control.controlnet)
            if model is None or self.control_node is None:
                raise InvalidRequest(f"No ControlNet model for `{region.control.controlnet}` is installed",
                                     field="nodes")  # fmt: skip
            shared.control = self.control_node(node, edge, region.control, model, prefix=f"{prefix}_control",
                                               width=shared.width, height=shared.height)  # fmt: skip
        return shared

    def _result(self, number: int, region: RegionNode, shared: _Shared, index: int, seed: int) -> tuple[str, str]:
        """(The node of this region's image for sample `index` at (w, h), the mask to paste it with or "")."""
        if is_pass_through(region):
            return shared.image, shared.alpha
        prefix = f"region_{number}_{index}"
        if region.image is None or not (region.infer or region.inpaint):
            # A region prompt, or a controlled txt2img.
            result = self._diffuse(prefix, region, shared, seed, latents="", mask="", strength=1.0)
        elif region.inpaint:
            strength = INPAINT_STRENGTH if region.strength is None else region.strength
            decoded = self._diffuse(prefix, region, shared, seed, latents=shared.latents, mask=shared.denoise_mask,
                                    strength=strength)  # fmt: skip
            left, top, box_width, box_height = shared.box
            if shared.diffusion != (box_width, box_height):
                unscaled = self.node(f"{prefix}_unscaled", "img_resize", width=box_width, height=box_height)
                self.edge(decoded, "image", unscaled, "image")
                decoded = unscaled
            result = self._paste(shared.image8, decoded, shared.paste_mask, left, top, node_id=f"{prefix}_pasted",
                                 final=False)  # fmt: skip
        else:
            latents = shared.latents
            if shared.mask8:
                # Gaps in an img2img image are inpainted first (Enfugue's in-place outpaint), then it is inferred.
                filled = self._diffuse(f"{prefix}_gaps", region, shared, seed, latents=latents,
                                       mask=shared.denoise_mask, strength=INPAINT_STRENGTH)  # fmt: skip
                pasted = self._paste(shared.image8, filled, shared.mask8, 0, 0, node_id=f"{prefix}_gaps_pasted",
                                     final=False)  # fmt: skip
                latents = self.node(f"{prefix}_gaps_latents", "i2l")
                self.edge(pasted, "image", latents, "image")
                self.edge(self.decoder, "vae", latents, "vae")
            strength = INFER_STRENGTH if region.strength is None else region.strength
            result = self._diffuse(prefix, region, shared, seed, latents=latents, mask="", strength=strength)
        if (shared.width, shared.height) != (region.w, region.h):
            resized = self.node(f"{prefix}_resized", "img_resize", width=region.w, height=region.h)
            self.edge(result, "image", resized, "image")
            result = resized
        return result, ""

    def _diffuse(self, prefix: str, region: RegionNode, shared: _Shared, seed: int, *, latents: str, mask: str,
                 strength: float) -> str:  # fmt: skip
        """noise → denoise (from `latents` at 1 - strength, within `mask`) → decoded image at the diffusion size."""
        node, edge, request = self.node, self.edge, self.request
        noise = node(f"{prefix}_noise", "noise", seed=seed, width=shared.diffusion[0], height=shared.diffusion[1])
        steps = request.steps if region.steps is None else region.steps
        cfg = request.guidance_scale if region.guidance_scale is None else region.guidance_scale
        denoise = node(f"{prefix}_denoise", "denoise_latents", steps=steps, cfg_scale=cfg, scheduler=self.scheduler,
                       denoising_start=1.0 - strength)  # fmt: skip
        edge(self.sources["unet"], "unet", denoise, "unet")
        edge(shared.positive, "conditioning", denoise, "positive_conditioning")
        edge(shared.negative, "conditioning", denoise, "negative_conditioning")
        edge(noise, "noise", denoise, "noise")
        if latents:
            edge(latents, "latents", denoise, "latents")
        if mask:
            edge(mask, "denoise_mask", denoise, "denoise_mask")
        if shared.control:
            edge(shared.control, "control", denoise, "control")
        decoded = node(f"{prefix}_decoded", "l2i")
        edge(denoise, "latents", decoded, "latents")
        edge(self.decoder, "vae", decoded, "vae")
        refiner = RefinerSettings.of(request, region)
        if shared.box[2:] != (shared.width, shared.height):
            # Enfugue does not refine a cropped inpaint (as the single-step path, enfugue_inpaint_options.py).
            refiner = replace(refiner, strength=0.0)
        self.steps.append(DiffusionStep(denoise, bool(mask), f"{shared.prefix}_refiner", *shared.texts,
                                        *shared.diffusion, refiner))  # fmt: skip
        return decoded

    # -- the canvas ---------------------------------------------------------------------------------------------

    def _paste(self, base: str, image: str, mask: str, x: int, y: int, *, node_id: str, final: bool) -> str:
        pasted = self.node(node_id, "img_paste", is_intermediate=not final, x=x, y=y, crop=True)
        self.edge(base, "image", pasted, "base_image")
        self.edge(image, "image", pasted, "image")
        if mask:
            self.edge(mask, "image", pasted, "mask")
        return pasted

    def _outpaint(self, canvas: str, index: int, seed: int, *, final: bool) -> str:
        """Inpaint the canvas where no region covered it (its transparent area), and paste that area in."""
        node, edge, request = self.node, self.edge, self.request
        assert request.width is not None and request.height is not None
        regions = request.nodes
        texts = (
            (join(*(r.prompt for r in regions), request.prompt), join(*(r.prompt_2 for r in regions),
                                                                      request.prompt_2) or None),
            (join(*(r.negative_prompt for r in regions), request.negative_prompt),
             join(*(r.negative_prompt_2 for r in regions), request.negative_prompt_2) or None),
        )  # fmt: skip
        if index == 0:
            self._prompts("outpaint", *texts, request.width, request.height)
        prefix = f"outpaint_{index}"
        covered = node(f"{prefix}_covered", "tomask")  # white = opaque = keep, in the engine's convention
        edge(canvas, "image", covered, "image")
        latents = node(f"{prefix}_latents", "i2l")
        edge(canvas, "image", latents, "image")
        edge(self.decoder, "vae", latents, "vae")
        mask = node(f"{prefix}_mask", "create_denoise_mask")
        edge(canvas, "image", mask, "image")
        edge(covered, "image", mask, "mask")
        edge(self.decoder, "vae", mask, "vae")
        noise = node(f"{prefix}_noise", "noise", seed=seed, width=request.width, height=request.height)
        denoise = node(f"{prefix}_denoise", "denoise_latents", steps=request.steps, cfg_scale=request.guidance_scale,
                       scheduler=self.scheduler, denoising_start=0.0)  # fmt: skip
        edge(self.sources["unet"], "unet", denoise, "unet")
        edge("outpaint_positive", "conditioning", denoise, "positive_conditioning")
        edge("outpaint_negative", "conditioning", denoise, "negative_conditioning")
        edge(noise, "noise", denoise, "noise")
        edge(latents, "latents", denoise, "latents")
        edge(mask, "denoise_mask", denoise, "denoise_mask")
        decoded = node(f"{prefix}_decoded", "l2i")
        edge(denoise, "latents", decoded, "latents")
        edge(self.decoder, "vae", decoded, "vae")
        self.steps.append(DiffusionStep(denoise, True, "outpaint_refiner", *texts, request.width, request.height,
                                        RefinerSettings.of(request)))  # fmt: skip
        return self._paste(canvas, decoded, covered, 0, 0, node_id=f"output_{index}" if final else prefix,
                           final=final)  # fmt: skip

    def _prompts(self, prefix: str, positive: tuple[str, str | None], negative: tuple[str, str | None], width: int,
                 height: int) -> tuple[str, str]:  # fmt: skip
        return prompt_nodes(self.node, self.edge, self.sources, self.sdxl, (f"{prefix}_positive", f"{prefix}_negative"),
                            positive, negative, width, height)  # fmt: skip

    def _frame(self, region: RegionNode, shared: _Shared) -> tuple[str, str]:
        """An inpaint region's crop_inpaint and scale_to_model_size (services/enfugue_inpaint_options.py): sets
        `shared.box`, `.diffusion` and `.paste_mask`; returns the (image, mask) nodes to diffuse from, image8 and
        mask8 themselves when neither option applies."""
        node, edge = self.node, self.edge
        image, mask = shared.image8, shared.mask8
        box, scaled = region_frame(region, shared.width, shared.height, self.request.size or self.size)
        shared.box = box
        if box != (0, 0, shared.width, shared.height):
            crop = {"x": box[0], "y": box[1], "width": box[2], "height": box[3]}
            image = node(f"{shared.prefix}_image_crop", "img_crop", **crop)
            edge(shared.image8, "image", image, "image")
            mask = shared.paste_mask = node(f"{shared.prefix}_mask_crop", "img_crop", **crop)
            edge(shared.mask8, "image", mask, "image")
        shared.diffusion = scaled or (box[2], box[3])
        if scaled is not None:
            # The paste back keeps the unscaled mask; the diffusion sees both scaled.
            image, mask = (self._scaled(source, f"{shared.prefix}_{name}_scaled", scaled)
                           for source, name in ((image, "image"), (mask, "mask")))  # fmt: skip
        return image, mask

    def _scaled(self, image: str, node_id: str, size: tuple[int, int]) -> str:
        resized = self.node(node_id, "img_resize", width=size[0], height=size[1])
        self.edge(image, "image", resized, "image")
        return resized

    def _resized(self, image: str, node_id: str, region: RegionNode, shared: _Shared) -> str:
        """`image` at the diffusion size (itself when (w, h) are multiples of 8 already)."""
        if (shared.width, shared.height) == (region.w, region.h):
            return image
        resized = self.node(node_id, "img_resize", width=shared.width, height=shared.height)
        self.edge(image, "image", resized, "image")
        return resized
