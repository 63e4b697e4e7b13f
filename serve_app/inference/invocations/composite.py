"""`blank_image`, `img_crop`, `img_paste` and `tomask`: each stores its result like any image output."""

from __future__ import annotations

from PIL import Image

from serve_app.domain.graph.base import BaseInvocation, WithBoard, WithMetadata
from serve_app.domain.graph.composite_nodes import (
    BlankImageInvocation,
    ImageCropInvocation,
    ImagePasteInvocation,
    MaskFromAlphaInvocation,
)
from serve_app.domain.graph.outputs import ImageOutput
from serve_app.domain.images import ImageCategory
from serve_app.inference.graph_context import NodeContext
from serve_app.inference.invocations._common import required
from serve_app.inference.nodes.composite import blank, crop, mask_from_alpha, paste


def _stored(
    node: BaseInvocation, context: NodeContext, image: Image.Image, category: ImageCategory = ImageCategory.GENERAL
) -> ImageOutput:
    assert isinstance(node, WithMetadata) and isinstance(node, WithBoard)
    stored = context.save_image(
        image,
        metadata=node.metadata,
        board_id=node.board.board_id if node.board else None,
        is_intermediate=node.is_intermediate,
        category=category,
    )
    return ImageOutput(image=stored, width=image.width, height=image.height)


def blank_image(node: BlankImageInvocation, context: NodeContext) -> ImageOutput:
    return _stored(node, context, blank(node.width, node.height, node.mode, node.color.tuple()))


def img_crop(node: ImageCropInvocation, context: NodeContext) -> ImageOutput:
    image = context.load_image(required(node, "image", node.image))
    return _stored(node, context, crop(image, node.x, node.y, node.width, node.height))


def img_paste(node: ImagePasteInvocation, context: NodeContext) -> ImageOutput:
    base = context.load_image(required(node, "base_image", node.base_image))
    image = context.load_image(required(node, "image", node.image))
    mask = context.load_image(node.mask) if node.mask is not None else None
    return _stored(node, context, paste(base, image, mask, node.x, node.y, crop_to_base=node.crop))


def tomask(node: MaskFromAlphaInvocation, context: NodeContext) -> ImageOutput:
    image = context.load_image(required(node, "image", node.image))
    return _stored(node, context, mask_from_alpha(image, node.invert), ImageCategory.MASK)
