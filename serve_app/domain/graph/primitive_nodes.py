"""Value nodes, `collect` / `iterate`, and `core_metadata`: the nodes that need no model."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict

from serve_app.domain.graph.base import BaseInvocation, InputField, OutputClass
from serve_app.domain.graph.fields import ModelIdentifierField
from serve_app.domain.graph.outputs import (
    BooleanOutput,
    CollectInvocationOutput,
    FloatOutput,
    IntegerOutput,
    IterateInvocationOutput,
    MetadataOutput,
    StringOutput,
)

INT32_MAX = 2**31 - 1


class IntegerInvocation(BaseInvocation):
    output_class: ClassVar[OutputClass] = IntegerOutput
    type: Literal["integer"] = "integer"
    value: int = InputField(0)


class FloatInvocation(BaseInvocation):
    output_class: ClassVar[OutputClass] = FloatOutput
    type: Literal["float"] = "float"
    value: float = InputField(0.0)


class StringInvocation(BaseInvocation):
    output_class: ClassVar[OutputClass] = StringOutput
    type: Literal["string"] = "string"
    value: str = InputField("")


class BooleanInvocation(BaseInvocation):
    output_class: ClassVar[OutputClass] = BooleanOutput
    type: Literal["boolean"] = "boolean"
    value: bool = InputField(False)


class RandomIntInvocation(BaseInvocation):
    """A random integer in [low, high); never cached, as in InvokeAI."""

    output_class: ClassVar[OutputClass] = IntegerOutput
    type: Literal["rand_int"] = "rand_int"
    use_cache: bool = False
    low: int = InputField(0)
    high: int = InputField(INT32_MAX)


class CollectInvocation(BaseInvocation):
    """Gathers every value sent to `item` (one edge each, or one per iteration) into `collection`.

    The execution fills `collection` on the prepared node (so it can't be connected); `item` stays empty.
    """

    output_class: ClassVar[OutputClass] = CollectInvocationOutput
    type: Literal["collect"] = "collect"
    item: Any = InputField(None, input="connection")
    collection: list[Any] = InputField(default_factory=list, input="direct")


class IterateInvocation(BaseInvocation):
    """Runs its downstream nodes once per element of `collection`; `index` is set per prepared copy."""

    output_class: ClassVar[OutputClass] = IterateInvocationOutput
    type: Literal["iterate"] = "iterate"
    collection: list[Any] = InputField(default_factory=list, input="connection")
    index: int = InputField(0, input="direct")


class CoreMetadataInvocation(BaseInvocation):
    """Collects generation parameters for the output image; unknown keys are kept, as in InvokeAI."""

    model_config = ConfigDict(extra="allow")
    output_class: ClassVar[OutputClass] = MetadataOutput
    type: Literal["core_metadata"] = "core_metadata"

    generation_mode: str | None = InputField(None)
    positive_prompt: str | None = InputField(None)
    negative_prompt: str | None = InputField(None)
    width: int | None = InputField(None)
    height: int | None = InputField(None)
    seed: int | None = InputField(None)
    rand_device: str | None = InputField(None)
    cfg_scale: float | None = InputField(None)
    cfg_rescale_multiplier: float | None = InputField(None)
    steps: int | None = InputField(None)
    scheduler: str | None = InputField(None)
    seamless_x: bool | None = InputField(None)
    seamless_y: bool | None = InputField(None)
    clip_skip: int | None = InputField(None)
    model: ModelIdentifierField | None = InputField(None)
    # Adapter/LoRA entries are copied into the metadata as sent; nothing here reads them back.
    controlnets: list[dict[str, Any]] | None = InputField(None)
    ipAdapters: list[dict[str, Any]] | None = InputField(None)  # noqa: N815 - InvokeAI's key
    t2iAdapters: list[dict[str, Any]] | None = InputField(None)  # noqa: N815 - InvokeAI's key
    loras: list[dict[str, Any]] | None = InputField(None)
    strength: float | None = InputField(None)
    init_image: str | None = InputField(None)
    vae: ModelIdentifierField | None = InputField(None)
    hrf_enabled: bool | None = InputField(None)
    hrf_method: str | None = InputField(None)
    hrf_strength: float | None = InputField(None)
    positive_style_prompt: str | None = InputField(None)
    negative_style_prompt: str | None = InputField(None)
    refiner_model: ModelIdentifierField | None = InputField(None)
    refiner_cfg_scale: float | None = InputField(None)
    refiner_steps: int | None = InputField(None)
    refiner_scheduler: str | None = InputField(None)
    refiner_positive_aesthetic_score: float | None = InputField(None)
    refiner_negative_aesthetic_score: float | None = InputField(None)
    refiner_start: float | None = InputField(None)
