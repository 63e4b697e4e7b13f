"""The node types serve-app understands: registry, output lookup and the `AnyInvocation` union.

The schemas live in `primitive_nodes`, `model_nodes`, `latent_nodes` and `image_nodes`; this module
is what the rest of the code imports. A `type` outside the union fails with pydantic's
`union_tag_invalid` error, which FastAPI reports as 422 exactly like InvokeAI does.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from serve_app.domain.graph.base import BaseInvocation, BaseInvocationOutput, InputKind, InputSpec, WithBoard
from serve_app.domain.graph.composite_nodes import (
    BlankImageInvocation,
    ImageCropInvocation,
    ImagePasteInvocation,
    MaskFromAlphaInvocation,
)
from serve_app.domain.graph.control_nodes import (
    CannyEdgeDetectionInvocation,
    CannyImageProcessorInvocation,
    ControlNetInvocation,
    ImageLerpInvocation,
)
from serve_app.domain.graph.image_nodes import ImageInvocation, ResizeImageInvocation, SaveImageInvocation
from serve_app.domain.graph.latent_nodes import (
    SEED_MAX,
    CreateDenoiseMaskInvocation,
    CreateGradientMaskInvocation,
    DenoiseLatentsInvocation,
    ImageToLatentsInvocation,
    LatentsToImageInvocation,
    NoiseInvocation,
    SchedulerName,
)
from serve_app.domain.graph.mask_nodes import ExpandMaskWithFadeInvocation
from serve_app.domain.graph.model_nodes import (
    CLIPSkipInvocation,
    CompelInvocation,
    LoRACollectionLoader,
    LoRALoaderInvocation,
    LoRASelectorInvocation,
    MainModelLoaderInvocation,
    SDXLCompelPromptInvocation,
    SDXLLoRACollectionLoader,
    SDXLLoRALoaderInvocation,
    SDXLModelLoaderInvocation,
    VAELoaderInvocation,
)
from serve_app.domain.graph.outputs import OUTPUTS as _OUTPUTS
from serve_app.domain.graph.primitive_nodes import (
    BooleanInvocation,
    CollectInvocation,
    CoreMetadataInvocation,
    FloatInvocation,
    IntegerInvocation,
    IterateInvocation,
    RandomIntInvocation,
    StringInvocation,
)
from serve_app.domain.graph.refiner_nodes import (
    REFINER_OUTPUTS,
    SDXLRefinerCompelPromptInvocation,
    SDXLRefinerModelLoaderInvocation,
)
from serve_app.domain.graph.tiled_nodes import TiledMultiDiffusionDenoiseLatents
from serve_app.domain.graph.upscale_nodes import (
    SpandrelImageToImageAutoscaleInvocation,
    SpandrelImageToImageInvocation,
)

__all__ = [
    "OUTPUTS",
    "SEED_MAX",
    "AnyInvocation",
    "BaseInvocation",
    "BaseInvocationOutput",
    "INVOCATIONS",
    "InputKind",
    "InputSpec",
    "SchedulerName",
    "output_class",
    "writes_images",
]

# Listed by hand (not built from INVOCATIONS) so mypy sees a real union.
AnyInvocation = Annotated[
    IntegerInvocation
    | FloatInvocation
    | StringInvocation
    | BooleanInvocation
    | RandomIntInvocation
    | CollectInvocation
    | IterateInvocation
    | CoreMetadataInvocation
    | MainModelLoaderInvocation
    | SDXLModelLoaderInvocation
    | VAELoaderInvocation
    | CLIPSkipInvocation
    | CompelInvocation
    | SDXLCompelPromptInvocation
    | SDXLRefinerModelLoaderInvocation
    | SDXLRefinerCompelPromptInvocation
    | LoRASelectorInvocation
    | LoRACollectionLoader
    | SDXLLoRACollectionLoader
    | LoRALoaderInvocation
    | SDXLLoRALoaderInvocation
    | NoiseInvocation
    | DenoiseLatentsInvocation
    | LatentsToImageInvocation
    | ImageToLatentsInvocation
    | CreateDenoiseMaskInvocation
    | CreateGradientMaskInvocation
    | ResizeImageInvocation
    | SaveImageInvocation
    | ImageInvocation
    | BlankImageInvocation
    | ImageCropInvocation
    | ImagePasteInvocation
    | MaskFromAlphaInvocation
    | ExpandMaskWithFadeInvocation
    | ControlNetInvocation
    | CannyEdgeDetectionInvocation
    | CannyImageProcessorInvocation
    | ImageLerpInvocation
    | SpandrelImageToImageInvocation
    | SpandrelImageToImageAutoscaleInvocation
    | TiledMultiDiffusionDenoiseLatents,
    Field(discriminator="type"),
]

_CLASSES: list[type[BaseInvocation]] = [
    IntegerInvocation,
    FloatInvocation,
    StringInvocation,
    BooleanInvocation,
    RandomIntInvocation,
    CollectInvocation,
    IterateInvocation,
    CoreMetadataInvocation,
    MainModelLoaderInvocation,
    SDXLModelLoaderInvocation,
    VAELoaderInvocation,
    CLIPSkipInvocation,
    CompelInvocation,
    SDXLCompelPromptInvocation,
    SDXLRefinerModelLoaderInvocation,
    SDXLRefinerCompelPromptInvocation,
    LoRASelectorInvocation,
    LoRACollectionLoader,
    SDXLLoRACollectionLoader,
    LoRALoaderInvocation,
    SDXLLoRALoaderInvocation,
    NoiseInvocation,
    DenoiseLatentsInvocation,
    LatentsToImageInvocation,
    ImageToLatentsInvocation,
    CreateDenoiseMaskInvocation,
    CreateGradientMaskInvocation,
    ResizeImageInvocation,
    SaveImageInvocation,
    ImageInvocation,
    BlankImageInvocation,
    ImageCropInvocation,
    ImagePasteInvocation,
    MaskFromAlphaInvocation,
    ExpandMaskWithFadeInvocation,
    ControlNetInvocation,
    CannyEdgeDetectionInvocation,
    CannyImageProcessorInvocation,
    ImageLerpInvocation,
    SpandrelImageToImageInvocation,
    SpandrelImageToImageAutoscaleInvocation,
    TiledMultiDiffusionDenoiseLatents,
]

INVOCATIONS: dict[str, type[BaseInvocation]] = {cls.model_fields["type"].default: cls for cls in _CLASSES}
# Every output type by name: the common ones and those of node modules with outputs of their own.
OUTPUTS: dict[str, type[BaseInvocationOutput]] = {
    **_OUTPUTS,
    **{cls.model_fields["type"].default: cls for cls in REFINER_OUTPUTS},
}


def output_class(node_type: str) -> type[BaseInvocationOutput]:
    """The output model a node type produces; KeyError for an unknown type."""
    return INVOCATIONS[node_type].output_class


def writes_images(node_type: str) -> bool:
    """Whether nodes of this type accept `board` (and so store what they produce in the gallery)."""
    return issubclass(INVOCATIONS[node_type], WithBoard)
