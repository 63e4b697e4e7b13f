"""Compact raw-graph builders for the graph tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def node(node_id: str, node_type: str, **fields: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, **fields}


def edge(source: str, destination: str) -> dict[str, Any]:
    """`edge("a.value", "b.item")`."""
    (s_node, s_field), (d_node, d_field) = source.split("."), destination.split(".")
    return {"source": {"node_id": s_node, "field": s_field}, "destination": {"node_id": d_node, "field": d_field}}


def graph(nodes: Sequence[dict[str, Any]], edges: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"id": "g", "nodes": {n["id"]: n for n in nodes}, "edges": list(edges)}
