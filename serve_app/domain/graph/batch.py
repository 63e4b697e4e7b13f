"""An enqueue request: one graph plus the values that fan it out into many sessions.

`data` is a list of zipped groups: the items of the datums inside one group are taken side by side,
groups are combined by cartesian product, and all of it is repeated `runs` times.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, Field, StrictStr, ValidationError, field_validator, model_validator
from pydantic.functional_validators import ModelWrapValidatorHandler

from serve_app.domain.graph.fields import ImageField
from serve_app.domain.graph.graph import Graph, inputs_filled_by_batch
from serve_app.domain.graph.invocations import BaseInvocation

BatchValue = StrictStr | float | int | ImageField


class BatchDatum(BaseModel):
    node_path: str
    field_name: str
    items: list[BatchValue] = Field(default_factory=list)

    @field_validator("items")
    @classmethod
    def _one_type(cls, items: list[BatchValue]) -> list[BatchValue]:
        # ints and floats mix (a float field takes both); anything else must match the first item.
        kinds = {float if type(item) is int else type(item) for item in items}
        if len(kinds) > 1:
            raise ValueError("All items in a batch datum must have the same type")
        return items


class NodeFieldValue(BaseModel):
    node_path: str
    field_name: str
    value: BatchValue


class Batch(BaseModel):
    batch_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    origin: str | None = None
    destination: str | None = None
    graph: Graph
    workflow: dict[str, Any] | None = None
    runs: int = Field(default=1, ge=1)
    data: list[list[BatchDatum]] | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _graph_may_leave_batch_fields_empty(cls, value: Any, handler: ModelWrapValidatorHandler[Batch]) -> Batch:
        with inputs_filled_by_batch(_batch_targets(value)):
            return handler(value)

    @model_validator(mode="after")
    def _validate_data(self) -> Batch:
        seen: set[tuple[str, str]] = set()
        for group in self.data or []:
            if len({len(datum.items) for datum in group}) > 1:
                raise ValueError("Zipped batch items must all have the same length")
            for datum in group:
                key = (datum.node_path, datum.field_name)
                if key in seen:
                    raise ValueError(f"Batch data sets {datum.node_path}.{datum.field_name} more than once")
                seen.add(key)
                node = self.graph.nodes.get(datum.node_path)
                if node is None:
                    raise ValueError(f"Node {datum.node_path} not found in graph")
                if node.input_spec(datum.field_name) is None:
                    raise ValueError(f"Field {datum.field_name} is not an input of node {datum.node_path}")
        _validated_values(self)  # a value that doesn't fit its field is a 422 now, not a failed session later
        return self


def _batch_targets(value: Any) -> frozenset[tuple[str, str]]:
    """The (node, field) pairs a raw batch targets; anything malformed is left for validation to report."""
    data = value.get("data") if isinstance(value, dict) else getattr(value, "data", None)
    pairs: set[tuple[str, str]] = set()
    for group in data if isinstance(data, list) else []:
        for datum in group if isinstance(group, list) else []:
            raw = datum.model_dump() if isinstance(datum, BatchDatum) else datum
            target = (raw.get("node_path"), raw.get("field_name")) if isinstance(raw, dict) else None
            if target is not None and isinstance(target[0], str) and isinstance(target[1], str):
                pairs.add((target[0], target[1]))
    return frozenset(pairs)


def count_sessions(batch: Batch) -> int:
    """How many sessions `expand_batch` yields: product of the zipped group lengths, times `runs`."""
    total = batch.runs
    for group in batch.data or []:
        if group:
            total *= len(group[0].items)
    return total


def expand_batch(batch: Batch, limit: int | None = None) -> Iterator[tuple[Graph, list[NodeFieldValue]]]:
    """Each session's graph (values substituted) and its field values, runs outer, groups in order.

    Graphs share the unchanged node objects with `batch.graph`: treat them as read-only. A value that
    does not fit its field raises ValueError naming the node and field.
    """
    validated = _validated_values(batch)
    groups = [list(zip(*(_datum_values(datum) for datum in group), strict=True)) for group in batch.data or [] if group]
    produced = 0
    for _ in range(batch.runs):
        for combination in itertools.product(*groups):
            if limit is not None and produced >= limit:
                return
            field_values = [value for zipped in combination for value in zipped]
            yield _substitute(batch.graph, field_values, validated), field_values
            produced += 1


def _datum_values(datum: BatchDatum) -> list[NodeFieldValue]:
    return [NodeFieldValue(node_path=datum.node_path, field_name=datum.field_name, value=item) for item in datum.items]


_ValueKey = tuple[str, str, str]  # node, field, repr of the item (items are not all hashable)


def _validated_values(batch: Batch) -> dict[_ValueKey, Any]:
    """Every distinct item validated once against its target field, as that field will hold it."""
    validated: dict[_ValueKey, Any] = {}
    for group in batch.data or []:
        for datum in group:
            node = batch.graph.nodes[datum.node_path]
            for item in datum.items:
                key = (datum.node_path, datum.field_name, repr(item))
                if key not in validated:
                    validated[key] = _validate_field(node, datum.field_name, item)
    return validated


def _validate_field(node: BaseInvocation, field_name: str, value: Any) -> Any:
    probe = node.model_copy()
    try:
        # Runs the field's own constraints and validators without re-validating the rest of the node.
        type(node).__pydantic_validator__.validate_assignment(probe, field_name, value)
    except ValidationError as error:
        reason = "; ".join(detail["msg"] for detail in error.errors())
        raise ValueError(f"Invalid value {value!r} for field {field_name} of node {node.id}: {reason}") from None
    return getattr(probe, field_name)


def _substitute(graph: Graph, field_values: list[NodeFieldValue], validated: dict[_ValueKey, Any]) -> Graph:
    updates: dict[str, dict[str, Any]] = {}
    for fv in field_values:
        value = validated[(fv.node_path, fv.field_name, repr(fv.value))]
        updates.setdefault(fv.node_path, {})[fv.field_name] = value
    nodes = dict(graph.nodes)
    for node_id, update in updates.items():
        nodes[node_id] = nodes[node_id].model_copy(update=update)
    return graph.model_copy(update={"nodes": nodes})
