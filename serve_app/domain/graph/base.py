"""What every node and every node output has in common, and how an input field is marked.

Every input is optional at parse time, as in InvokeAI: a value may still arrive by edge or by batch
substitution. The `InputField` marker records what InvokeAI calls `input` (connection / direct / any)
and `orig_required`; the graph validator uses it to reject required inputs left without a value or edge.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias, cast

from pydantic import BaseModel, ConfigDict, Field

from serve_app.domain.graph.fields import BoardField, MetadataField

InputKind = Literal["connection", "direct", "any"]


@dataclass(frozen=True)
class InputSpec:
    """How one input may be fed: `connection` = only by edge, `direct` = only inline, `any` = either."""

    kind: InputKind
    required: bool


def InputField(  # noqa: N802 - reads like pydantic's `Field`, which it wraps
    default: Any = None,
    *,
    input: InputKind = "any",  # noqa: A002 - InvokeAI's name for it
    required: bool = False,
    **constraints: Any,
) -> Any:
    """A node input; the marker also lands in the JSON schema under InvokeAI's keys."""
    extra: dict[str, Any] = {"field_kind": "input", "input": input, "orig_required": required}
    if "default_factory" in constraints:
        return Field(json_schema_extra=extra, **constraints)
    return Field(default, json_schema_extra=extra, **constraints)


class BaseInvocationOutput(BaseModel):
    """A node's result; `type` names the output class (e.g. `image_output`)."""

    type: str
    output_meta: dict[str, Any] | None = None


# Node classes bind `type` to their tag string, which shadows the builtin inside the class body:
# annotate their `output_class` with this alias instead of `type[...]`.
OutputClass: TypeAlias = type[BaseInvocationOutput]


class BaseInvocation(BaseModel):
    """One graph node. Subclasses narrow `type` to a Literal and set `output_class`."""

    # Unknown inputs are a client error (422), not something to drop silently. InvokeAI also turns
    # numbers sent to string inputs into strings (a prompt of `5`), so do we.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    output_class: ClassVar[type[BaseInvocationOutput]]

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    type: str
    is_intermediate: bool = False
    use_cache: bool = True

    @classmethod
    def input_spec(cls, field_name: str) -> InputSpec | None:
        """The marker of an input field, or None when `field_name` is not an input of this node."""
        return _input_specs(cls).get(field_name)

    @classmethod
    def input_names(cls) -> list[str]:
        """The names of all input fields, in declaration order."""
        return list(_input_specs(cls))


@functools.cache
def _input_specs(cls: type[BaseInvocation]) -> dict[str, InputSpec]:
    specs: dict[str, InputSpec] = {}
    for name, info in cls.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("field_kind") == "input":
            specs[name] = InputSpec(kind=cast(InputKind, extra["input"]), required=bool(extra["orig_required"]))
    return specs


class WithMetadata(BaseModel):
    """Nodes that write images accept the `core_metadata` output, embedded in the PNG."""

    metadata: MetadataField | None = InputField(None, input="connection")


class WithBoard(BaseModel):
    """Nodes that write images may file them on a board."""

    board: BoardField | None = InputField(None, input="direct")
