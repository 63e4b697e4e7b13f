"""`expand_mask_with_fade`: stores the faded mask like any image output, in the `mask` category."""

from __future__ import annotations

from serve_app.domain.graph.mask_nodes import ExpandMaskWithFadeInvocation
from serve_app.domain.graph.outputs import ImageOutput
from serve_app.domain.images import ImageCategory
from serve_app.inference.graph_context import NodeContext
from serve_app.inference.invocations._common import required
from serve_app.inference.nodes.mask_fade import expand_mask_with_fade as fade


def expand_mask_with_fade(node: ExpandMaskWithFadeInvocation, context: NodeContext) -> ImageOutput:
    mask = context.load_image(required(node, "mask", node.mask))
    faded = fade(mask, node.fade_size_px, node.threshold)
    stored = context.save_image(
        faded,
        metadata=node.metadata,
        board_id=node.board.board_id if node.board else None,
        is_intermediate=node.is_intermediate,
        category=ImageCategory.MASK,
    )
    return ImageOutput(image=stored, width=faded.width, height=faded.height)
