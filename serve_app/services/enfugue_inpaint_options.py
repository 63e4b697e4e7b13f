"""Enfugue's single-step inpaint and img2img options (enfugue-api.md §5.2) as a rewrite of the built graph.

- `inpaint_feather` (pixels): the stored mask's repaint area is grown outward with a fade
  (`expand_mask_with_fade`), and that soft mask is both the denoise mask and the paste-back mask, so the seam is a
  blend. Pixels farther than the feather from the repaint area stay exactly the input's.
- `crop_inpaint`: when the mask's repaint box covers less than 75% of the image, only that box (grown by the
  feather, at least `size` × `size` where the image allows, multiples of 8, clamped to the image) is cut out
  (`img_crop`), diffused and pasted back at its place, so nothing outside it changes. As in Enfugue, that step is
  not refined. A ControlNet image covers the whole canvas, so a controlled inpaint is never cropped.
- `scale_to_model_size`: when the diffused area (the image, or the crop) is smaller than `size` on its short side,
  it is scaled up (at most 3×, multiples of 8) for diffusion (`img_resize`) and the result scaled back down.

The graph is built first as today (services/generation_graphs.py: `input` i2l, `mask` create_denoise_mask,
`noise_<i>`, `decoded_<i>`/`output_<i>` l2i, `output_<i>`/`pasted_<i>` img_paste) and then rewired here, so that
builder stays one readable path. `size` is the request's, else the model's native size.
"""

from __future__ import annotations

import dataclasses
import io
from typing import TYPE_CHECKING, Any

from PIL import Image

from serve_app.domain.generation import GenerationRequest, RegionNode
from serve_app.services.enfugue_upscale import EdgeFn, NodeFn

if TYPE_CHECKING:
    from serve_app.services.generation_graphs import GraphExtras

Nodes = dict[str, dict[str, Any]]
Edges = list[dict[str, Any]]
Box = tuple[int, int, int, int]

# Enfugue crops only when the mask covers less than this share of the image.
CROP_COVERAGE = 0.75
# Enfugue scales a small input up by at most this factor.
MAX_SCALE = 3.0


def mask_box(png: bytes) -> Box | None:
    """(x, y, w, h) of the repaint area (black, below half grey) of a stored engine mask; None when nothing is
    repainted. Found at submit, where the mask's pixels are at hand; the graph builder has only its name."""
    with Image.open(io.BytesIO(png)) as image:
        repaint = image.convert("L").point(lambda value: 255 if value < 128 else 0)
    bbox = repaint.getbbox()
    return None if bbox is None else (bbox[0], bbox[1], bbox[2] - bbox[0], bbox[3] - bbox[1])


def round8(value: int) -> int:
    return -(-value // 8) * 8


def _span(start: int, length: int, grow: int, least: int, limit: int) -> tuple[int, int]:
    """One axis of the crop: [start - grow, start + length + grow] widened around its centre to `least`, rounded
    up to a multiple of 8, at most `limit` (a multiple of 8), shifted to lie within [0, limit]."""
    low, high = start - grow, start + length + grow
    if high - low < least:
        centre = (low + high) // 2
        low, high = centre - least // 2, centre - least // 2 + least
    extent = min(round8(high - low), limit)
    low = min(max(low, 0), limit - extent)
    return low, extent


def crop_box(request: GenerationRequest, size: int) -> Box | None:
    """The box a single-step inpaint diffuses with `crop_inpaint`, or None when the whole image is diffused."""
    width, height = request.width, request.height
    assert width is not None and height is not None
    if not request.crop_inpaint or request.mask is None or request.mask_box is None or request.control is not None:
        return None
    return area_crop(width, height, request.mask_box, request.inpaint_feather, size)


def area_crop(width: int, height: int, box: Box, feather: int, size: int) -> Box | None:
    """The crop of a width × height area (multiples of 8) whose mask repaints `box`: None when the box covers
    75% of it or more, or when the grown box is the whole area."""
    x, y, w, h = box
    if w * h >= CROP_COVERAGE * width * height:
        return None
    left, box_width = _span(x, w, feather, size, width)
    top, box_height = _span(y, h, feather, size, height)
    if (box_width, box_height) == (width, height):
        return None
    return left, top, box_width, box_height


def region_frame(region: RegionNode, width: int, height: int, size: int) -> tuple[Box, tuple[int, int] | None]:
    """Where a canvas inpaint region diffuses within its image at the diffusion size width × height (its (w, h)
    rounded up to multiples of 8): (the crop box, or the whole image; the scaled diffusion size or None). A
    controlled region is neither cropped nor scaled: its ControlNet image covers the whole region."""
    whole = (0, 0, width, height)
    if not region.inpaint or region.mask is None or region.control is not None:
        return whole, None
    box = None
    if region.crop_inpaint and region.mask_box is not None:
        # The mask box was found in the region's (w, h): brought to the diffusion size, rounded outward.
        x, y, w, h = region.mask_box
        left, top = x * width // region.w, y * height // region.h
        right, bottom = -(-(x + w) * width // region.w), -(-(y + h) * height // region.h)
        box = area_crop(width, height, (left, top, right - left, bottom - top), region.inpaint_feather, size)
    frame = box or whole
    scaled = scaled_size(frame[2], frame[3], size) if region.scale_to_model_size else None
    return frame, scaled


def scaled_size(width: int, height: int, size: int) -> tuple[int, int] | None:
    """The diffusion size of a width × height area with `scale_to_model_size`: its short side brought up to `size`
    (at most 3×, multiples of 8); None when it is not smaller than `size`."""
    if min(width, height) >= size:
        return None
    scale = min(size / min(width, height), MAX_SCALE)
    return round8(round(width * scale)), round8(round(height * scale))


def apply_inpaint_options(
    nodes: Nodes, edges: Edges, request: GenerationRequest, size: int, extras: GraphExtras
) -> GraphExtras:
    """Rewire a single-step image graph for the request's options; returns the extras for the rest of the build
    (without the refiner when the inpaint was cropped). Text-to-image, canvas regions and the strength-0
    pass-through are left as they are."""
    if request.nodes or request.image is None or "input" not in nodes:
        return extras
    assert request.width is not None and request.height is not None
    size = request.size or size
    box = crop_box(request, size)
    left, top, width, height = box or (0, 0, request.width, request.height)
    scaled = scaled_size(width, height, size) if request.scale_to_model_size else None
    feather = request.inpaint_feather if request.mask is not None else 0
    if box is None and scaled is None and feather == 0:
        return extras
    graph = _Rewire(nodes, edges)
    image: str = request.image
    mask: str | None = request.mask
    image_is_node = mask_is_node = False
    if request.mask is not None and feather > 0:
        mask = graph.add("mask_feathered", "expand_mask_with_fade", mask={"image_name": request.mask},
                         fade_size_px=feather)  # fmt: skip
        mask_is_node = True
    if box is not None:
        crop = {"x": left, "y": top, "width": width, "height": height}
        image = graph.fed("input_crop", "img_crop", (image, image_is_node), **crop)
        image_is_node = True
        if mask is not None:
            mask = graph.fed("mask_crop", "img_crop", (mask, mask_is_node), **crop)
            mask_is_node = True
    # The paste-back mask is the cropped one at the crop's size; diffusion sees both scaled when scaling.
    paste_mask = None if mask is None else (mask, mask_is_node)
    diffused = (image, image_is_node)
    diffused_mask = paste_mask
    if scaled is not None:
        diffused = (graph.fed("input_scaled", "img_resize", diffused, width=scaled[0], height=scaled[1]), True)
        if paste_mask is not None:
            diffused_mask = (graph.fed("mask_scaled", "img_resize", paste_mask, width=scaled[0], height=scaled[1]),
                             True)  # fmt: skip
    graph.feed(diffused, "input", "image")
    if "mask" in nodes and diffused_mask is not None:
        graph.feed(diffused, "mask", "image")
        graph.feed(diffused_mask, "mask", "mask")
    noise_size = scaled or (width, height)
    for index in range(request.num_images):
        nodes[f"noise_{index}"].update(width=noise_size[0], height=noise_size[1])
        if scaled is not None:
            graph.scale_back(index, width, height)
        paste = next((node_id for node_id in (f"output_{index}", f"pasted_{index}")
                      if nodes.get(node_id, {}).get("type") == "img_paste"), None)  # fmt: skip
        if paste is not None and paste_mask is not None:
            graph.feed(paste_mask, paste, "mask")
            nodes[paste].update(x=left, y=top, crop=True)
    # Enfugue does not refine a cropped inpaint.
    return dataclasses.replace(extras, refiner=None) if box is not None else extras


@dataclasses.dataclass
class _Rewire:
    nodes: Nodes
    edges: Edges

    def add(self, node_id: str, node_type: str, **fields: Any) -> str:
        self.nodes[node_id] = {"id": node_id, "type": node_type, "is_intermediate": True, **fields}
        return node_id

    def edge(self, source: str, source_field: str, destination: str, destination_field: str) -> None:
        self.edges.append({"source": {"node_id": source, "field": source_field},
                           "destination": {"node_id": destination, "field": destination_field}})  # fmt: skip

    def feed(self, source: tuple[str, bool], destination: str, field: str) -> None:
        """Set `destination.field` to a stored image (name, False) or a node's `image` output (id, True)."""
        value, is_node = source
        self.edges[:] = [item for item in self.edges if (item["destination"]["node_id"], item["destination"]["field"])
                         != (destination, field)]  # fmt: skip
        if is_node:
            self.nodes[destination].pop(field, None)
            self.edge(value, "image", destination, field)
        else:
            self.nodes[destination][field] = {"image_name": value}

    def fed(self, node_id: str, node_type: str, source: tuple[str, bool], **fields: Any) -> str:
        """A new node whose `image` is `source`."""
        self.add(node_id, node_type, **fields)
        self.feed(source, node_id, "image")
        return node_id

    def scale_back(self, index: int, width: int, height: int) -> None:
        """Sample `index`'s decoded image resized back to width × height, in place of the decoded one. A final
        decode (`output_<i>`, img2img without upscale) hands its id (and its metadata edge) to the resize."""
        decoded = f"decoded_{index}"
        if decoded not in self.nodes:
            final = self.nodes.pop(f"output_{index}")
            self.nodes[decoded] = {**final, "id": decoded, "is_intermediate": True}
            for item in self.edges:
                target = item["destination"]
                if target["node_id"] == f"output_{index}" and target["field"] != "metadata":
                    target["node_id"] = decoded
            self.add(f"output_{index}", "img_resize", is_intermediate=False, width=width, height=height)
            self.edge(decoded, "image", f"output_{index}", "image")
            return
        resized = self.add(f"{decoded}_unscaled", "img_resize", width=width, height=height)
        for item in self.edges:
            if item["source"]["node_id"] == decoded:
                item["source"]["node_id"] = resized
        self.edge(decoded, "image", resized, "image")


def feathered_region_mask(node: NodeFn, edge: EdgeFn, mask: str, prefix: str, region: RegionNode) -> str:
    """A canvas region's inpaint mask node with the region's `inpaint_feather` (services/enfugue_regions.py uses
    it for the denoise mask and the paste back); `mask` itself when the region does not inpaint or has no feather.
    Its `crop_inpaint` and `scale_to_model_size` are `region_frame`'s."""
    if not region.inpaint or region.inpaint_feather <= 0:
        return mask
    faded = node(f"{prefix}_mask_feathered", "expand_mask_with_fade", fade_size_px=region.inpaint_feather)
    edge(mask, "image", faded, "mask")
    return faded
