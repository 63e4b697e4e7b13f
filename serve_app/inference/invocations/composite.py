"""`blank_image`, `img_crop`, `img_paste` and `tomask`: each stores its result like any image output."""

from __future__ import annotations

from serve_app.domain.graph.composite_nodes import (
    BlankImageInvocation,
    ImageCropInvocation,
    ImagePasteInvocation,
    MaskFromAlphaInvocation,
)
from serve_app.domain.graph.outputs import ImageOutput
from serve_app.domain.images import ImageCategory
from serve_app.inference.graph_context import NodeContext
from serve_app.inference.invocations._common import image_output, required
from serve_app.inference.nodes.composite import blank, crop, mask_from_alpha, paste


def blank_image(node: BlankImageInvocation, context: NodeContext) -> ImageOutput:
    return image_output(context, node, blank(node.width, node.height, node.mode, node.color.tuple()))


def img_crop(node: ImageCropInvocation, context: NodeContext) -> ImageOutput:
    image = context.load_image(required(node, "image", node.image))
    return image_output(context, node, crop(image, node.x, node.y, node.width, node.height))


def img_paste(node: ImagePasteInvocation, context: NodeContext) -> ImageOutput:
    base = context.load_image(required(node, "base_image", node.base_image))
    image = context.load_image(required(node, "image", node.image))
    mask = context.load_image(node.mask) if node.mask is not None else None
    return image_output(context, node, paste(base, image, mask, node.x, node.y, crop_to_base=node.crop))


def tomask(node: MaskFromAlphaInvocation, context: NodeContext) -> ImageOutput:
    image = context.load_image(required(node, "image", node.image))
    return image_output(context, node, mask_from_alpha(image, node.invert), ImageCategory.MASK)
