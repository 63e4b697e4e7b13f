"""Which field types may be joined by an edge: the rules of InvokeAI's `are_connection_types_compatible`.

Types are plain annotations (`int`, `CLIPField | None`, `list[ConditioningField]`, `Any`). `None` is
ignored (every input is optional at parse time); a union accepts anything one of its members accepts.
"""

from __future__ import annotations

import types
import typing
from typing import Any


def members(annotation: Any) -> list[Any]:
    """The non-None alternatives of a (possibly union) annotation."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return [annotation]


def list_element(annotation: Any) -> Any | None:
    """`T` for `list[T]` (`Any` for a bare `list`), None for anything that is not a list."""
    if annotation is list:
        return Any
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0]
    return None


def is_list(annotation: Any) -> bool:
    """Whether every alternative of the annotation is a list (so a single value must be wrapped)."""
    options = members(annotation)
    return bool(options) and all(list_element(option) is not None for option in options)


def compatible(source: Any, destination: Any) -> bool:
    """Whether a value typed `source` may feed an input typed `destination`."""
    return all(any(_fits(s, d) for d in members(destination)) for s in members(source))


def _fits(source: Any, destination: Any) -> bool:
    if source is Any or destination is Any or source == destination:
        return True
    if source is int and destination is float:
        return True
    source_element, destination_element = list_element(source), list_element(destination)
    if destination_element is not None:
        # A list feeds a list of compatible elements; a single value is wrapped into a one-item list.
        return compatible(source_element if source_element is not None else source, destination_element)
    if source_element is not None:
        return False
    return isinstance(source, type) and isinstance(destination, type) and issubclass(source, destination)


def common_type(annotations: list[Any]) -> Any:
    """The type a `collect` gathers: the one all items fit into, or None when they disagree."""
    known = [a for a in annotations if a is not Any]
    if not known:
        return Any
    for candidate in known:
        if all(compatible(other, candidate) for other in known):
            return candidate
    return None
