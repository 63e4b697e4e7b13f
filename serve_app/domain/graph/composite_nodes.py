"""Image compositing nodes with InvokeAI 6.8's names and fields (invokeai/app/invocations/image.py):
`blank_image`, `img_crop`, `img_paste` and `tomask` (MaskFromAlphaInvocation). Enfugue's canvas regions are
composited with them (services/enfugue_regions.py), and InvokeAI graphs may use them as InvokeAI's own."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.domain.graph.base import BaseInvocation, InputField, OutputClass, WithBoard, WithMetadata
from serve_app.domain.graph.fields import ImageField
from serve_app.domain.graph.outputs import ImageOutput


class ColorField(BaseModel):
    """InvokeAI's RGBA colour, each channel 0-255."""

    model_config = ConfigDict(extra="ignore")

    r: int = Field(ge=0, le=255)
    g: int = Field(ge=0, le=255)
    b: int = Field(ge=0, le=255)
    a: int = Field(ge=0, le=255)

    def tuple(self) -> tuple[int, int, int, int]:
        return self.r, self.g, self.b, self.a


class BlankImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    """A width × height image of one colour (opaque black by default)."""

    output_class: ClassVar[OutputClass] = ImageOutput
    type: Literal["blank_image"] = "blank_image"
    width: int = InputField(512, gt=0)
    height: int = InputField(512, gt=0)
    mode: Literal["RGB", "RGBA"] = InputField("RGB")
    color: ColorField = InputField(default_factory=lambda: ColorField(r=0, g=0, b=0, a=255))


class ImageCropInvocation(BaseInvocation, WithMetadata, WithBoard):
    """The box (x, y, width, height) of an image, as RGBA; the part of the box outside the image is transparent."""

    output_class: ClassVar[OutputClass] = ImageOutput
    type: Literal["img_crop"] = "img_crop"
    image: ImageField | None = InputField(None, required=True)
    x: int = InputField(0)
    y: int = InputField(0)
    width: int = InputField(512, gt=0)
    height: int = InputField(512, gt=0)


class ImagePasteInvocation(BaseInvocation, WithMetadata, WithBoard):
    """`image` pasted onto `base_image` at (x, y), as RGBA; the canvas grows to hold both unless `crop`.
    As in InvokeAI the `mask` is inverted before use: `image` lands where the mask is black."""

    output_class: ClassVar[OutputClass] = ImageOutput
    type: Literal["img_paste"] = "img_paste"
    base_image: ImageField | None = InputField(None, required=True)
    image: ImageField | None = InputField(None, required=True)
    mask: ImageField | None = InputField(None)
    x: int = InputField(0)
    y: int = InputField(0)
    crop: bool = InputField(False)


class MaskFromAlphaInvocation(BaseInvocation, WithMetadata, WithBoard):
    """An image's alpha channel as an L mask (white = opaque), or its inverse."""

    output_class: ClassVar[OutputClass] = ImageOutput
    type: Literal["tomask"] = "tomask"
    image: ImageField | None = InputField(None, required=True)
    invert: bool = InputField(False)
