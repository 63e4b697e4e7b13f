"""`spandrel_image_to_image` and `spandrel_image_to_image_autoscale` (InvokeAI's upscaling nodes)."""

from __future__ import annotations

import logging

from PIL import Image

from serve_app.domain.graph.outputs import ImageOutput
from serve_app.domain.graph.upscale_nodes import SpandrelImageToImageAutoscaleInvocation, SpandrelImageToImageInvocation
from serve_app.domain.models import ModelType
from serve_app.inference.graph_context import NodeContext
from serve_app.inference.invocations._common import image_output, model_of, required
from serve_app.inference.upscaling import SpandrelModel, load_spandrel, upscale

logger = logging.getLogger(__name__)

# InvokeAI's bound on autoscale runs: a 2× model reaches the 16× maximum in 4; one more "just in case".
MAX_RUNS = 5

Node = SpandrelImageToImageInvocation | SpandrelImageToImageAutoscaleInvocation


def spandrel_image_to_image(node: SpandrelImageToImageInvocation, context: NodeContext) -> ImageOutput:
    image, model = _inputs(node, context)
    return image_output(context, node, _run(image, model, node, context))


def spandrel_image_to_image_autoscale(
    node: SpandrelImageToImageAutoscaleInvocation, context: NodeContext
) -> ImageOutput:
    image, model = _inputs(node, context)
    target = int(image.width * node.scale), int(image.height * node.scale)
    result = _run(image, model, node, context)
    if result.width > image.width and result.height > image.height:
        runs = 1
        while (result.width < target[0] or result.height < target[1]) and runs < MAX_RUNS:
            result = _run(result, model, node, context)
            runs += 1
    else:
        # A model that does not enlarge (restoration, denoising) ignores `scale`, as in InvokeAI.
        if node.scale > 1:
            logger.warning("Model %s does not enlarge images; scale %s ignored", node.image_to_image_model, node.scale)
        target = result.size
    if node.fit_to_multiple_of_8:
        target = target[0] // 8 * 8, target[1] // 8 * 8
    if result.size != target:
        result = result.resize(target, resample=Image.Resampling.LANCZOS)
    return image_output(context, node, result)


def _inputs(node: Node, context: NodeContext) -> tuple[Image.Image, SpandrelModel]:
    image = context.load_image(required(node, "image", node.image)).convert("RGB")
    spec = model_of(context, required(node, "image_to_image_model", node.image_to_image_model), ModelType.SPANDREL)
    model: SpandrelModel = context.cached_model(spec, lambda device, dtype: load_spandrel(spec, device, dtype))
    return image, model


def _run(image: Image.Image, model: SpandrelModel, node: Node, context: NodeContext) -> Image.Image:
    # Each tile reports progress, which is also where a canceled item stops.
    return upscale(image, model, node.tile_size,
                   lambda done, total: context.progress(done, total, message="Processing tiles"))  # fmt: skip
