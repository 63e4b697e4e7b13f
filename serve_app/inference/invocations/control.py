"""`controlnet`, the canny detectors and `img_lerp`; `control_inputs` turns denoise_latents' `control` into
ControlNet inputs (models loaded through the cache, images fitted to the output size)."""

from __future__ import annotations

from collections.abc import Sequence

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.graph.control_nodes import (
    CannyEdgeDetectionInvocation,
    CannyImageProcessorInvocation,
    ControlNetInvocation,
    ImageLerpInvocation,
)
from serve_app.domain.graph.fields import ControlField
from serve_app.domain.graph.outputs import ControlOutput, ImageOutput
from serve_app.domain.models import ModelFamily, ModelSpec, ModelType
from serve_app.inference.graph_context import NodeContext
from serve_app.inference.invocations._common import image_output, model_of, required
from serve_app.inference.nodes.control import (
    ControlNetInput,
    canny_at_resolution,
    canny_edges,
    control_tensor,
    lerp_image,
)

# ControlNets of these bases run with main models of the same base only (SD 1 and SD 2 differ in text width).
_SAME_BASE = frozenset({ModelFamily.SD1, ModelFamily.SD2, ModelFamily.SDXL})


def controlnet(node: ControlNetInvocation, context: NodeContext) -> ControlOutput:
    """Checks the model is a ControlNet and passes everything on; the work happens in denoise_latents."""
    image = required(node, "image", node.image)
    identifier = required(node, "control_model", node.control_model)
    model_of(context, identifier, ModelType.CONTROLNET)
    field = ControlField(
        image=image,
        control_model=identifier,
        control_weight=node.control_weight,
        begin_step_percent=node.begin_step_percent,
        end_step_percent=node.end_step_percent,
        control_mode=node.control_mode,
        resize_mode=node.resize_mode,
    )
    return ControlOutput(control=field)


def canny_edge_detection(node: CannyEdgeDetectionInvocation, context: NodeContext) -> ImageOutput:
    image = context.load_image(required(node, "image", node.image))
    return image_output(context, node, canny_edges(image, node.low_threshold, node.high_threshold))


def canny_image_processor(node: CannyImageProcessorInvocation, context: NodeContext) -> ImageOutput:
    image = context.load_image(required(node, "image", node.image))
    edges = canny_at_resolution(
        image, node.low_threshold, node.high_threshold, node.detect_resolution, node.image_resolution
    )
    return image_output(context, node, edges)


def img_lerp(node: ImageLerpInvocation, context: NodeContext) -> ImageOutput:
    image = context.load_image(required(node, "image", node.image))
    return image_output(context, node, lerp_image(image, node.min, node.max))


def control_inputs(
    context: NodeContext,
    value: ControlField | list[ControlField] | None,
    main: ModelSpec,
    steps: int,
    width: int,
    height: int,
) -> list[ControlNetInput]:
    """denoise_latents' `control` input (one field or a collection) as ControlNet inputs for a width × height
    output of main model `main`: each model must be a ControlNet of the main model's base, and a per-step weight
    list must have one value per step."""
    fields = value if isinstance(value, list) else [] if value is None else [value]
    inputs: list[ControlNetInput] = []
    for field in fields:
        spec = model_of(context, field.control_model, ModelType.CONTROLNET)
        if spec.family in _SAME_BASE and spec.family is not main.family:
            raise InvalidRequest(
                f"ControlNet {spec.name} is a {spec.family} model and cannot be used with {main.name}, "
                f"a {main.family} model",
                field="control",
            )
        weight: float | Sequence[float] = field.control_weight
        if isinstance(weight, list) and len(weight) != steps:
            raise InvalidRequest(f"control_weight has {len(weight)} values for {steps} steps", field="control")
        image = control_tensor(context.load_image(field.image), width, height, field.resize_mode)
        inputs.append(
            ControlNetInput(
                model=context.components.controlnet(spec),
                image=image,
                weight=weight,
                begin_step_percent=field.begin_step_percent,
                end_step_percent=field.end_step_percent,
                mode=field.control_mode,
            )
        )
    return inputs
