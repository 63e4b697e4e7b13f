"""Running one session's graph: which node is next, with its inputs filled in from upstream results.

Mirrors InvokeAI's GraphExecutionState. Source nodes are copied into *prepared* nodes (new uuid4
ids) once all their parents have finished:
- an ordinary node gets one prepared copy per iteration it sits in (one when no `iterate` is upstream);
- `iterate` gets one prepared copy per element of its input (`collection` and `index` set), and the
  nodes below it fan out per element;
- `collect` gets one prepared copy whose `collection` holds every upstream instance's value, in
  edge order then iteration order.
`collect` and `iterate` copies are handed out by `next()` like any node, as InvokeAI does; run them
with `PRIMITIVES` (see `primitives.py`).
"""

from __future__ import annotations

import copy
import uuid
from collections import deque
from typing import Any

from pydantic import ValidationError

from serve_app.domain.graph.compat import is_list
from serve_app.domain.graph.graph import Edge, EdgeConnection, Graph
from serve_app.domain.graph.invocations import BaseInvocation, BaseInvocationOutput

# Which element of each enclosing `iterate` a prepared node belongs to: ((iterate source id, index), ...).
IterationKey = tuple[tuple[str, int], ...]


class GraphExecution:
    """The execution state of one session; `state()` is InvokeAI's GraphExecutionState JSON."""

    def __init__(self, graph: Graph, session_id: str) -> None:
        self.graph = graph
        self.session_id = session_id
        self.executed: list[str] = []
        self.executed_history: list[str] = []
        self.results: dict[str, BaseInvocationOutput] = {}
        self.errors: dict[str, str] = {}
        self.prepared_source_mapping: dict[str, str] = {}
        self.source_prepared_mapping: dict[str, list[str]] = {}
        self._execution_graph_id = str(uuid.uuid4())
        self._prepared: dict[str, BaseInvocation] = {}
        self._prepared_edges: list[Edge] = []
        self._incoming = {node_id: graph.incoming(node_id) for node_id in graph.nodes}
        self._pending = graph.topological_order()  # source nodes not prepared yet, parents first
        self._instances: dict[str, list[tuple[IterationKey, str]]] = {}  # source id -> its prepared copies
        self._unfinished: dict[str, set[str]] = {}  # source id -> prepared ids not completed yet
        self._done: set[str] = set()  # source ids whose every prepared copy has completed
        self._ready: deque[str] = deque()

    def next(self) -> BaseInvocation | None:
        """The next prepared node to run, or None when nothing is ready.

        None means finished (`is_complete()`), failed (`has_error()`), or waiting for nodes already
        handed out to be completed.
        """
        while not self._ready and not self.errors:
            source_id = self._next_preparable()
            if source_id is None:
                return None
            self._prepare(source_id)
        if self.errors:
            return None
        return self._prepared[self._ready.popleft()]

    def complete(self, prepared_id: str, output: BaseInvocationOutput) -> None:
        """Record a prepared node's output."""
        node = self._prepared[prepared_id]
        source_id = self.prepared_source_mapping[prepared_id]
        if prepared_id not in self._unfinished[source_id]:
            raise ValueError(f"Node {prepared_id} is not running")
        if not isinstance(output, node.output_class):
            raise TypeError(f"Node {prepared_id} ({node.type}) must produce {node.output_class.__name__}")
        self.results[prepared_id] = output
        self.executed.append(prepared_id)
        self._unfinished[source_id].discard(prepared_id)
        self._finish_source_if_done(source_id)

    def fail(self, prepared_id: str, error: BaseException | str) -> None:
        """Record a node failure: an exception becomes `"ErrType: message"`, a string is kept as given."""
        if prepared_id not in self._prepared:
            raise KeyError(prepared_id)
        self.errors[prepared_id] = error if isinstance(error, str) else f"{type(error).__name__}: {error}"

    def has_error(self) -> bool:
        return bool(self.errors)

    def is_complete(self) -> bool:
        """Failed, or every source node has run (as InvokeAI's `is_complete`)."""
        return self.has_error() or len(self._done) == len(self.graph.nodes)

    def source_id(self, prepared_id: str) -> str:
        return self.prepared_source_mapping[prepared_id]

    def state(self) -> dict[str, Any]:
        """GraphExecutionState as InvokeAI serializes it (`session` of a queue item)."""
        return {
            "id": self.session_id,
            "graph": self.graph.model_dump(mode="json"),
            "execution_graph": {
                "id": self._execution_graph_id,
                "nodes": {pid: node.model_dump(mode="json") for pid, node in self._prepared.items()},
                "edges": [edge.model_dump(mode="json") for edge in self._prepared_edges],
            },
            "executed": list(self.executed),
            "executed_history": list(self.executed_history),
            "results": {pid: output.model_dump(mode="json") for pid, output in self.results.items()},
            "errors": dict(self.errors),
            "prepared_source_mapping": dict(self.prepared_source_mapping),
            "source_prepared_mapping": {sid: list(pids) for sid, pids in self.source_prepared_mapping.items()},
        }

    # -- preparation ---------------------------------------------------------------------------

    def _next_preparable(self) -> str | None:
        for source_id in self._pending:
            if all(edge.source.node_id in self._done for edge in self._incoming[source_id]):
                self._pending.remove(source_id)
                return source_id
        return None

    def _prepare(self, source_id: str) -> None:
        node = self.graph.nodes[source_id]
        self._instances[source_id] = []
        self._unfinished[source_id] = set()
        if node.type == "collect":
            self._prepare_collect(node)
        else:
            for key, parents in self._joined_parents(source_id):
                inputs = self._inputs(node, parents)
                feeds = [
                    (parents[e.source.node_id], e.source.field, e.destination.field) for e in self._incoming[source_id]
                ]
                if node.type == "iterate":
                    collection = inputs.get("collection", getattr(node, "collection", []))
                    for index in range(len(collection)):
                        self._add(node, key + ((source_id, index),), {**inputs, "index": index}, feeds)
                else:
                    self._add(node, key, inputs, feeds)
        self._finish_source_if_done(source_id)  # a node below an empty iteration has nothing to run

    def _joined_parents(self, source_id: str) -> list[tuple[IterationKey, dict[str, str]]]:
        """One entry per prepared copy to make: its iteration key and the prepared id of each parent.

        Parents' copies are matched when they agree on every iteration they share, so two values from
        the same iteration pair up, while independent iterations multiply.
        """
        joined: list[tuple[IterationKey, dict[str, str]]] = [((), {})]
        parent_ids = list(dict.fromkeys(edge.source.node_id for edge in self._incoming[source_id]))
        for parent_id in parent_ids:
            joined = [
                (_merge(key, parent_key), {**chosen, parent_id: parent_pid})
                for key, chosen in joined
                for parent_key, parent_pid in self._instances[parent_id]
                if _agree(key, parent_key)
            ]
        return joined

    def _inputs(self, node: BaseInvocation, parents: dict[str, str]) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        for edge in self._incoming[node.id]:
            value = self._output_value(parents[edge.source.node_id], edge.source.field)
            if is_list(type(node).model_fields[edge.destination.field].annotation) and not isinstance(value, list):
                value = [value]  # one value into a list input, as InvokeAI does
            inputs[edge.destination.field] = value
        return inputs

    def _prepare_collect(self, node: BaseInvocation) -> None:
        collection: list[Any] = []
        feeds: list[tuple[str, str, str]] = []
        for edge in self._incoming[node.id]:
            for _, parent_pid in self._instances[edge.source.node_id]:
                collection.append(self._output_value(parent_pid, edge.source.field))
                feeds.append((parent_pid, edge.source.field, "item"))
        self._add(node, (), {"collection": collection}, feeds)

    def _output_value(self, prepared_id: str, field: str) -> Any:
        # Copied so a node that mutates an input can't change what its siblings receive.
        return copy.deepcopy(getattr(self.results[prepared_id], field))

    def _add(
        self, node: BaseInvocation, key: IterationKey, inputs: dict[str, Any], feeds: list[tuple[str, str, str]]
    ) -> None:
        """Registers one prepared copy; `feeds` are its incoming (prepared id, output field, input field)."""
        prepared_id = str(uuid.uuid4())
        data = {**node.model_dump(), **inputs, "id": prepared_id}
        self._instances[node.id].append((key, prepared_id))
        self.prepared_source_mapping[prepared_id] = node.id
        self.source_prepared_mapping.setdefault(node.id, []).append(prepared_id)
        self._unfinished[node.id].add(prepared_id)
        try:
            prepared = type(node).model_validate(data)
        except ValidationError as error:
            # An upstream value broke this node's constraints: the session fails here, as in InvokeAI.
            # The execution graph keeps the node without its inputs, which did not validate.
            self._prepared[prepared_id] = node.model_copy(update={"id": prepared_id})
            self.errors[prepared_id] = f"ValidationError: {error}"
            return
        self._prepared[prepared_id] = prepared
        self._ready.append(prepared_id)
        self._prepared_edges.extend(_edge(pid, output, prepared_id, field) for pid, output, field in feeds)

    def _finish_source_if_done(self, source_id: str) -> None:
        if source_id in self._done or source_id in self._pending or self._unfinished[source_id]:
            return
        self._done.add(source_id)
        self.executed.append(source_id)
        self.executed_history.append(source_id)


def _agree(a: IterationKey, b: IterationKey) -> bool:
    indices = dict(a)
    return all(indices.get(iterator, index) == index for iterator, index in b)


def _merge(a: IterationKey, b: IterationKey) -> IterationKey:
    present = {iterator for iterator, _ in a}
    return a + tuple(pair for pair in b if pair[0] not in present)


def _edge(source_id: str, source_field: str, destination_id: str, destination_field: str) -> Edge:
    return Edge(
        source=EdgeConnection(node_id=source_id, field=source_field),
        destination=EdgeConnection(node_id=destination_id, field=destination_field),
    )
