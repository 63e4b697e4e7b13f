"""ControlNet nodes with InvokeAI 6.8's names and fields: `controlnet` (→ a ControlField for denoise_latents),
the canny detector (`canny_edge_detection`, and the pre-5.0 `canny_image_processor`), and `img_lerp`, InvokeAI's
linear pixel remap (min 255 / max 0 inverts an image, which is how Enfugue's `invert_control_image` is built)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import model_validator

from serve_app.domain.graph.base import BaseInvocation, InputField, OutputClass, WithBoard, WithMetadata
from serve_app.domain.graph.fields import ImageField, ModelIdentifierField
from serve_app.domain.graph.outputs import ControlOutput, ImageOutput

ControlMode = Literal["balanced", "more_prompt", "more_control", "unbalanced"]
ResizeMode = Literal["just_resize", "crop_resize", "fill_resize", "just_resize_simple"]
CONTROL_MODES: tuple[str, ...] = ControlMode.__args__  # type: ignore[attr-defined]
RESIZE_MODES: tuple[str, ...] = ResizeMode.__args__  # type: ignore[attr-defined]


class ControlNetInvocation(BaseInvocation):
    """Bundles a control image and a ControlNet model for `denoise_latents.control` (it runs nothing itself)."""

    output_class: ClassVar[OutputClass] = ControlOutput
    type: Literal["controlnet"] = "controlnet"
    image: ImageField | None = InputField(None, required=True)
    control_model: ModelIdentifierField | None = InputField(None, required=True)
    control_weight: float | list[float] = InputField(1.0)  # each in [-1, 2], checked below
    begin_step_percent: float = InputField(0.0, ge=0, le=1)
    end_step_percent: float = InputField(1.0, ge=0, le=1)
    control_mode: ControlMode = InputField("balanced")
    resize_mode: ResizeMode = InputField("just_resize")

    @model_validator(mode="after")
    def _begin_before_end(self) -> ControlNetInvocation:
        if self.begin_step_percent > self.end_step_percent:
            raise ValueError("begin_step_percent must be less than or equal to end_step_percent")
        weights = self.control_weight if isinstance(self.control_weight, list) else [self.control_weight]
        if any(not -1 <= weight <= 2 for weight in weights):
            raise ValueError("control weights must be between -1 and 2")
        return self


class CannyEdgeDetectionInvocation(BaseInvocation, WithMetadata, WithBoard):
    """White edges on black (OpenCV's Canny with hysteresis thresholds `low_threshold` and `high_threshold`)."""

    output_class: ClassVar[OutputClass] = ImageOutput
    type: Literal["canny_edge_detection"] = "canny_edge_detection"
    image: ImageField | None = InputField(None, required=True)
    low_threshold: int = InputField(100, ge=0, le=255)
    high_threshold: int = InputField(200, ge=0, le=255)


class CannyImageProcessorInvocation(BaseInvocation, WithMetadata, WithBoard):
    """The pre-5.0 name of the canny detector, still found in saved workflows: the image is resized to
    `detect_resolution` (short side) for detection and the edges to `image_resolution`."""

    output_class: ClassVar[OutputClass] = ImageOutput
    type: Literal["canny_image_processor"] = "canny_image_processor"
    image: ImageField | None = InputField(None, required=True)
    detect_resolution: int = InputField(512, ge=1)
    image_resolution: int = InputField(512, ge=1)
    low_threshold: int = InputField(100, ge=0, le=255)
    high_threshold: int = InputField(200, ge=0, le=255)


class ImageLerpInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Each channel value v becomes min + v / 255 · (max - min)."""

    output_class: ClassVar[OutputClass] = ImageOutput
    type: Literal["img_lerp"] = "img_lerp"
    image: ImageField | None = InputField(None, required=True)
    min: int = InputField(0, ge=0, le=255)
    max: int = InputField(255, ge=0, le=255)
