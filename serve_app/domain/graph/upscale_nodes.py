"""Spandrel image-to-image nodes with InvokeAI 6.8's names and fields: `spandrel_image_to_image` runs a model
(ESRGAN and kin) once over the image, tile by tile; `spandrel_image_to_image_autoscale` runs it until the image
is `scale` times its size, then resizes to exactly that (Lanczos), optionally down to multiples of 8."""

from __future__ import annotations

from typing import ClassVar, Literal

from serve_app.domain.graph.base import BaseInvocation, InputField, OutputClass, WithBoard, WithMetadata
from serve_app.domain.graph.fields import ImageField, ModelIdentifierField
from serve_app.domain.graph.outputs import ImageOutput


class SpandrelImageToImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Run any spandrel image-to-image model; `tile_size` 0 runs the whole image at once."""

    output_class: ClassVar[OutputClass] = ImageOutput
    type: Literal["spandrel_image_to_image"] = "spandrel_image_to_image"
    image: ImageField | None = InputField(None, required=True)
    image_to_image_model: ModelIdentifierField | None = InputField(None, required=True)
    tile_size: int = InputField(512)


class SpandrelImageToImageAutoscaleInvocation(BaseInvocation, WithMetadata, WithBoard):
    """The same until the target scale is reached. A model that does not enlarge (a restoration model) runs
    once and `scale` is ignored, as in InvokeAI."""

    output_class: ClassVar[OutputClass] = ImageOutput
    type: Literal["spandrel_image_to_image_autoscale"] = "spandrel_image_to_image_autoscale"
    image: ImageField | None = InputField(None, required=True)
    image_to_image_model: ModelIdentifierField | None = InputField(None, required=True)
    tile_size: int = InputField(512)
    scale: float = InputField(4.0, gt=0, le=16)
    fit_to_multiple_of_8: bool = InputField(False)
