"""Pure implementations of the nodes that need no model: values, `collect`, `iterate`, metadata.

An executor looks a prepared node's `type` up in `PRIMITIVES` first and hands the rest to the
diffusion implementations.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from serve_app.domain.graph.base import BaseInvocation, BaseInvocationOutput
from serve_app.domain.graph.outputs import (
    BooleanOutput,
    CollectInvocationOutput,
    FloatOutput,
    IntegerOutput,
    IterateInvocationOutput,
    MetadataOutput,
    StringOutput,
)
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

APP_VERSION = "6.8.1"  # the InvokeAI version we speak; clients read it back from image metadata

_BOOKKEEPING = {"id", "type", "is_intermediate", "use_cache"}


def integer(node: IntegerInvocation) -> IntegerOutput:
    return IntegerOutput(value=node.value)


def float_(node: FloatInvocation) -> FloatOutput:
    return FloatOutput(value=node.value)


def string(node: StringInvocation) -> StringOutput:
    return StringOutput(value=node.value)


def boolean(node: BooleanInvocation) -> BooleanOutput:
    return BooleanOutput(value=node.value)


def rand_int(node: RandomIntInvocation) -> IntegerOutput:
    """Uniform in [low, high), like InvokeAI's `np.random.randint`."""
    return IntegerOutput(value=random.randrange(node.low, node.high))


def collect(node: CollectInvocation) -> CollectInvocationOutput:
    return CollectInvocationOutput(collection=list(node.collection))


def iterate(node: IterateInvocation) -> IterateInvocationOutput:
    return IterateInvocationOutput(item=node.collection[node.index], index=node.index, total=len(node.collection))


def core_metadata(node: CoreMetadataInvocation) -> MetadataOutput:
    """The fields that were set (extra keys included) plus `app_version`, JSON-ready for the PNG chunk."""
    metadata = node.model_dump(mode="json", exclude_none=True, exclude=_BOOKKEEPING)
    metadata["app_version"] = APP_VERSION
    return MetadataOutput(metadata=metadata)


def _typed(function: Callable[[Any], BaseInvocationOutput]) -> Callable[[BaseInvocation], BaseInvocationOutput]:
    # The registry is keyed by node type, so each function only ever receives its own node class.
    return function


PRIMITIVES: dict[str, Callable[[BaseInvocation], BaseInvocationOutput]] = {
    "integer": _typed(integer),
    "float": _typed(float_),
    "string": _typed(string),
    "boolean": _typed(boolean),
    "rand_int": _typed(rand_int),
    "collect": _typed(collect),
    "iterate": _typed(iterate),
    "core_metadata": _typed(core_metadata),
}
