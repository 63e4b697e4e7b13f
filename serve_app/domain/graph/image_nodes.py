"""Nodes that take an image and write one to the gallery: resize, save and the image primitive."""

from __future__ import annotations

from typing import ClassVar, Literal

from serve_app.domain.graph.base import BaseInvocation, InputField, OutputClass, WithBoard, WithMetadata
from serve_app.domain.graph.fields import ImageField
from serve_app.domain.graph.outputs import ImageOutput


class ResizeImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    output_class: ClassVar[OutputClass] = ImageOutput
    type: Literal["img_resize"] = "img_resize"
    image: ImageField | None = InputField(None, required=True)
    width: int = InputField(512, gt=0)
    height: int = InputField(512, gt=0)
    resample_mode: Literal["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"] = InputField("bicubic")


class SaveImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Copies an image into the gallery; never cached, as in InvokeAI."""

    output_class: ClassVar[OutputClass] = ImageOutput
    type: Literal["save_image"] = "save_image"
    use_cache: bool = False
    image: ImageField | None = InputField(None, required=True)


class ImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Passes an existing image on (the UI does not add its output to the gallery)."""

    output_class: ClassVar[OutputClass] = ImageOutput
    type: Literal["image"] = "image"
    image: ImageField | None = InputField(None, required=True)
