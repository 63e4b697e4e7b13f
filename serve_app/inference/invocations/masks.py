"""`expand_mask_with_fade`: stores the faded mask like any image output, in the `mask` category."""

from __future__ import annotations

from serve_app.domain.graph.mask_nodes import ExpandMaskWithFadeInvocation
from serve_app.domain.graph.outputs import ImageOutput
from serve_app.domain.images import ImageCategory
from serve_app.inference.graph_context import NodeContext
from serve_app.inference.invocations._common import image_output, required
from serve_app.inference.nodes.mask_fade import expand_mask_with_fade as fade


def expand_mask_with_fade(node: ExpandMaskWithFadeInvocation, context: NodeContext) -> ImageOutput:
    mask = context.load_image(required(node, "mask", node.mask))
    faded = fade(mask, node.fade_size_px, node.threshold)
    return image_output(context, node, faded, ImageCategory.MASK)
