"""`img_resize`, `save_image` and the `image` primitive."""

from __future__ import annotations

from serve_app.domain.graph.image_nodes import ImageInvocation, ResizeImageInvocation, SaveImageInvocation
from serve_app.domain.graph.outputs import ImageOutput
from serve_app.inference.graph_context import NodeContext
from serve_app.inference.invocations._common import image_output, required
from serve_app.inference.nodes import resize


def img_resize(node: ResizeImageInvocation, context: NodeContext) -> ImageOutput:
    image = context.load_image(required(node, "image", node.image))
    resized = resize(image, node.width, node.height, node.resample_mode)
    return image_output(context, node, resized)


def save_image(node: SaveImageInvocation, context: NodeContext) -> ImageOutput:
    """A copy of the image as a new gallery image, with this node's metadata and board."""
    image = context.load_image(required(node, "image", node.image))
    return image_output(context, node, image)


def image(node: ImageInvocation, context: NodeContext) -> ImageOutput:
    """The existing image passed on as is (read only for its size); nothing is stored."""
    field = required(node, "image", node.image)
    loaded = context.load_image(field)
    return ImageOutput(image=field, width=loaded.width, height=loaded.height)
