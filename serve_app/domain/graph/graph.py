"""A submitted node graph and its validation.

Validation runs when the model is parsed, so a bad graph is a pydantic `ValidationError` whose message
is `Value error, <text>`: the 422 InvokeAI answers. The first problem found is reported.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel, Field, model_validator

from serve_app.domain.graph.compat import common_type, compatible, list_element, members
from serve_app.domain.graph.invocations import AnyInvocation, BaseInvocation
from serve_app.domain.graph.outputs import output_field_names

# (node id, field) pairs a batch will fill in. A graph inside a Batch may leave those required
# inputs empty; Batch sets this while its graph is being validated.
_filled_by_batch: ContextVar[frozenset[tuple[str, str]]] = ContextVar("filled_by_batch", default=frozenset())


@contextmanager
def inputs_filled_by_batch(pairs: frozenset[tuple[str, str]]) -> Iterator[None]:
    """Within this block, graphs don't require a value or edge for these (node id, field) inputs."""
    token = _filled_by_batch.set(pairs)
    try:
        yield
    finally:
        _filled_by_batch.reset(token)


class EdgeConnection(BaseModel):
    node_id: str
    field: str


class Edge(BaseModel):
    source: EdgeConnection
    destination: EdgeConnection


class Graph(BaseModel):
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    nodes: dict[str, AnyInvocation] = Field(default_factory=dict)
    edges: list[Edge] = Field(default_factory=list)

    @model_validator(mode="after")
    def _validate_self(self) -> Graph:
        _check_structure(self)
        order = self.topological_order()  # raises on a cycle
        _check_types(self, order)
        _check_required_inputs(self, _filled_by_batch.get())
        return self

    def incoming(self, node_id: str) -> list[Edge]:
        """Edges into `node_id`, in graph order."""
        return [edge for edge in self.edges if edge.destination.node_id == node_id]

    def topological_order(self) -> list[str]:
        """Node ids, parents first; ties go to the node listed first, so the order is deterministic."""
        position = {node_id: index for index, node_id in enumerate(self.nodes)}
        children: dict[str, list[str]] = {node_id: [] for node_id in self.nodes}
        waiting_on = dict.fromkeys(self.nodes, 0)
        for edge in self.edges:
            children[edge.source.node_id].append(edge.destination.node_id)
            waiting_on[edge.destination.node_id] += 1
        ready = [(position[n], n) for n, count in waiting_on.items() if count == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            _, node_id = heapq.heappop(ready)
            order.append(node_id)
            for child in children[node_id]:
                waiting_on[child] -= 1
                if waiting_on[child] == 0:
                    heapq.heappush(ready, (position[child], child))
        if len(order) != len(self.nodes):
            stuck = sorted(n for n in self.nodes if n not in set(order))
            raise ValueError(f"Graph contains a cycle (through nodes {', '.join(stuck)})")
        return order


def _describe(node: BaseInvocation) -> str:
    return f"{node.id} ({node.type})"


def _check_structure(graph: Graph) -> None:
    for key, node in graph.nodes.items():
        if key != node.id:
            raise ValueError(f"Node key {key} does not match node id {node.id}")
    connected: set[tuple[str, str]] = set()
    for edge in graph.edges:
        source, destination = edge.source, edge.destination
        if source.node_id not in graph.nodes:
            raise ValueError(f"Edge source node {source.node_id} does not exist in the graph")
        if destination.node_id not in graph.nodes:
            raise ValueError(f"Edge destination node {destination.node_id} does not exist in the graph")
        source_node, destination_node = graph.nodes[source.node_id], graph.nodes[destination.node_id]
        if source.field not in output_field_names(source_node.output_class):
            raise ValueError(f"Edge source field {source.field} is not an output of node {_describe(source_node)}")
        spec = destination_node.input_spec(destination.field)
        if spec is None:
            raise ValueError(
                f"Edge destination field {destination.field} is not an input of node {_describe(destination_node)}"
            )
        if spec.kind == "direct":
            raise ValueError(f"Input {destination.field} of node {_describe(destination_node)} cannot be connected")
        target = (destination.node_id, destination.field)
        if target in connected and not (destination_node.type == "collect" and destination.field == "item"):
            raise ValueError(
                f"Input {destination.field} of node {_describe(destination_node)} has more than one incoming edge"
            )
        connected.add(target)


def _type_name(annotation: Any) -> str:
    options = members(annotation)
    if len(options) > 1:
        return " | ".join(_type_name(option) for option in options)
    element = list_element(options[0])
    if element is not None:
        return f"list[{_type_name(element)}]"
    return str(getattr(options[0], "__name__", options[0]))


def _check_types(graph: Graph, order: list[str]) -> None:
    """Edge type compatibility, with `collect`/`iterate` outputs typed by what flows into them."""
    inferred: dict[tuple[str, str], Any] = {}  # (node id, output field) -> type, for collect and iterate

    def source_type(edge: Edge) -> Any:
        key = (edge.source.node_id, edge.source.field)
        if key in inferred:
            return inferred[key]
        output = graph.nodes[edge.source.node_id].output_class
        return output.model_fields[edge.source.field].annotation

    for node_id in order:
        node = graph.nodes[node_id]
        edges_in = graph.incoming(node_id)
        for edge in edges_in:
            field_type = type(node).model_fields[edge.destination.field].annotation
            if not compatible(source_type(edge), field_type):
                raise ValueError(
                    f"Edge {edge.source.node_id}.{edge.source.field} -> {node_id}.{edge.destination.field} connects "
                    f"incompatible types ({_type_name(source_type(edge))} -> {_type_name(field_type)})"
                )
        if node.type == "collect":
            item_type = common_type([source_type(e) for e in edges_in if e.destination.field == "item"])
            if item_type is None:
                raise ValueError(f"Items collected by node {node_id} do not all have the same type")
            inferred[(node_id, "collection")] = list[item_type]  # type: ignore[valid-type]
        elif node.type == "iterate":
            sources = [source_type(e) for e in edges_in if e.destination.field == "collection"]
            element = list_element(sources[0]) if sources else Any
            if sources and sources[0] is not Any and (len(members(sources[0])) != 1 or element is None):
                raise ValueError(f"Input of iterate node {node_id} must be a collection")
            inferred[(node_id, "item")] = element


def _check_required_inputs(graph: Graph, filled_by_batch: frozenset[tuple[str, str]]) -> None:
    connected = {(edge.destination.node_id, edge.destination.field) for edge in graph.edges}
    for node_id, node in graph.nodes.items():
        for field in node.input_names():
            spec = node.input_spec(field)
            if spec is None or not spec.required or getattr(node, field) is not None:
                continue
            if (node_id, field) not in connected and (node_id, field) not in filled_by_batch:
                raise ValueError(f"Node {_describe(node)} is missing required input {field}")
