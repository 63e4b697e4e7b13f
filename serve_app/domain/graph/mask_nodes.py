"""Mask nodes with InvokeAI 6.8's names and fields (invokeai/app/invocations/mask.py): `expand_mask_with_fade`.
Enfugue's `inpaint_feather` is compiled into it (services/enfugue_inpaint_options.py)."""

from __future__ import annotations

from typing import ClassVar, Literal

from serve_app.domain.graph.base import BaseInvocation, InputField, OutputClass, WithBoard, WithMetadata
from serve_app.domain.graph.fields import ImageField
from serve_app.domain.graph.outputs import ImageOutput


class ExpandMaskWithFadeInvocation(BaseInvocation, WithMetadata, WithBoard):
    """The black area of a mask (black = keep the generated image) grown outward by `fade_size_px` pixels with
    a smooth fade from black to white; pixels above `threshold` count as white. Fade 0: the mask unchanged."""

    output_class: ClassVar[OutputClass] = ImageOutput
    type: Literal["expand_mask_with_fade"] = "expand_mask_with_fade"
    mask: ImageField | None = InputField(None, required=True)
    threshold: int = InputField(0, ge=0, le=255)
    fade_size_px: int = InputField(32, ge=0)
