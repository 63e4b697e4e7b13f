"""Running graphs of model-free nodes through GraphExecution with the PRIMITIVES implementations."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from serve_app.domain.graph.base import BaseInvocationOutput
from serve_app.domain.graph.execution import GraphExecution
from serve_app.domain.graph.graph import Graph
from serve_app.domain.graph.outputs import IntegerOutput, StringOutput
from serve_app.domain.graph.primitives import PRIMITIVES
from tests.domain.graph.helpers import edge, graph, node


def start(nodes: Sequence[dict[str, Any]], edges: Sequence[dict[str, Any]] = ()) -> GraphExecution:
    return GraphExecution(Graph.model_validate(graph(nodes, edges)), "session-1")


def run(execution: GraphExecution) -> list[str]:
    """Runs every node; returns the source ids in the order their copies were handed out."""
    handed_out = []
    while (prepared := execution.next()) is not None:
        handed_out.append(execution.source_id(prepared.id))
        execution.complete(prepared.id, PRIMITIVES[prepared.type](prepared))
    return handed_out


def outputs(execution: GraphExecution, source_id: str) -> list[BaseInvocationOutput]:
    return [execution.results[pid] for pid in execution.source_prepared_mapping[source_id]]


def values(execution: GraphExecution, source_id: str, field: str = "value") -> list[Any]:
    return [getattr(output, field) for output in outputs(execution, source_id)]


def test_runs_in_deterministic_topological_order_with_inputs_filled() -> None:
    execution = start(
        [node("f", "float"), node("b", "integer", value=3), node("a", "integer", value=7), node("s", "string")],
        [edge("a.value", "f.value")],
    )
    assert run(execution) == ["b", "a", "f", "s"]
    assert values(execution, "f") == [7.0]
    assert execution.is_complete() and not execution.has_error()
    assert execution.executed_history == ["b", "a", "f", "s"]


def test_collect_gathers_items_in_edge_order() -> None:
    execution = start(
        [node("x", "integer", value=1), node("y", "integer", value=2), node("c", "collect")],
        [edge("y.value", "c.item"), edge("x.value", "c.item")],
    )
    handed_out = run(execution)
    assert handed_out[-1] == "c"  # collect copies are handed out like any node
    assert values(execution, "c", "collection") == [[2, 1]]


def iteration_graph(prompts: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """prompts -> collect -> iterate -> (string copy, metadata) -> collect."""
    nodes = [node(f"p{i}", "string", value=p) for i, p in enumerate(prompts)]
    nodes += [
        node("prompts", "collect"),
        node("each", "iterate"),
        node("echo", "string"),
        node("meta", "core_metadata", steps=4),
        node("gathered", "collect"),
        node("metas", "collect"),
    ]
    edges = [edge(f"p{i}.value", "prompts.item") for i in range(len(prompts))]
    edges += [
        edge("prompts.collection", "each.collection"),
        edge("each.item", "echo.value"),
        edge("echo.value", "gathered.item"),
        edge("each.item", "meta.positive_prompt"),
        edge("echo.value", "meta.negative_prompt"),
        edge("each.index", "meta.seed"),
        edge("meta.metadata", "metas.item"),
    ]
    return nodes, edges


def test_iterate_fans_out_and_collect_gathers_in_order() -> None:
    execution = start(*iteration_graph(["a", "b", "c"]))
    run(execution)
    assert [(o.item, o.index, o.total) for o in outputs(execution, "each")] == [  # type: ignore[attr-defined]
        ("a", 0, 3),
        ("b", 1, 3),
        ("c", 2, 3),
    ]
    assert values(execution, "echo") == ["a", "b", "c"]
    assert values(execution, "gathered", "collection") == [["a", "b", "c"]]
    # Two inputs from the same iteration pair up (3 copies, not 3 x 3).
    metadata = values(execution, "meta", "metadata")
    assert [(m["positive_prompt"], m["negative_prompt"], m["seed"]) for m in metadata] == [
        ("a", "a", 0),
        ("b", "b", 1),
        ("c", "c", 2),
    ]
    assert len(values(execution, "metas", "collection")[0]) == 3
    assert execution.is_complete()


def test_independent_iterations_multiply() -> None:
    nodes = [
        node("n1", "integer", value=1),
        node("n2", "integer", value=2),
        node("xs", "collect"),
        node("ys", "collect"),
        node("x", "iterate"),
        node("y", "iterate"),
        node("pair", "core_metadata"),
    ]
    edges = [
        edge("n1.value", "xs.item"),
        edge("n2.value", "xs.item"),
        edge("n1.value", "ys.item"),
        edge("n2.value", "ys.item"),
        edge("xs.collection", "x.collection"),
        edge("ys.collection", "y.collection"),
        edge("x.item", "pair.width"),
        edge("y.item", "pair.height"),
    ]
    execution = start(nodes, edges)
    run(execution)
    assert [(m["width"], m["height"]) for m in values(execution, "pair", "metadata")] == [
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
    ]


def test_empty_iteration_runs_nothing_downstream() -> None:
    nodes, edges = iteration_graph([])
    execution = start(nodes, edges)
    handed_out = run(execution)
    assert "echo" not in handed_out and "each" not in handed_out
    assert values(execution, "gathered", "collection") == [[]]
    assert execution.is_complete()
    assert set(execution.executed_history) == {n["id"] for n in nodes}


def test_single_value_into_a_list_input_is_wrapped() -> None:
    # `loras` is a list input; one metadata dict sent to it arrives as a one-item list.
    execution = start(
        [node("first", "core_metadata", seed=1), node("second", "core_metadata")],
        [edge("first.metadata", "second.loras")],
    )
    run(execution)
    assert values(execution, "second", "metadata") == [
        {"loras": [{"seed": 1, "app_version": "6.8.1"}], "app_version": "6.8.1"}
    ]


def test_state_shape_and_mappings() -> None:
    execution = start(*iteration_graph(["a", "b"]))
    run(execution)
    state = execution.state()
    assert list(state) == [
        "id",
        "graph",
        "execution_graph",
        "executed",
        "executed_history",
        "results",
        "errors",
        "prepared_source_mapping",
        "source_prepared_mapping",
    ]
    assert state["id"] == "session-1"
    assert state["graph"]["id"] == "g" and set(state["graph"]["nodes"]) == set(execution.graph.nodes)
    exec_graph = state["execution_graph"]
    assert set(exec_graph["nodes"]) == set(state["results"]) == set(state["prepared_source_mapping"])
    for prepared_id, prepared in exec_graph["nodes"].items():
        uuid.UUID(prepared_id)
        assert prepared["id"] == prepared_id
        assert prepared["type"] == execution.graph.nodes[state["prepared_source_mapping"][prepared_id]].type
    for source_id, prepared_ids in state["source_prepared_mapping"].items():
        assert all(state["prepared_source_mapping"][pid] == source_id for pid in prepared_ids)
    assert len(state["source_prepared_mapping"]["echo"]) == 2
    # Prepared copies carry the values that reached them, and edges join prepared ids.
    echo_ids = state["source_prepared_mapping"]["echo"]
    assert [exec_graph["nodes"][pid]["value"] for pid in echo_ids] == ["a", "b"]
    gathered_id = state["source_prepared_mapping"]["gathered"][0]
    assert exec_graph["nodes"][gathered_id]["collection"] == ["a", "b"]
    into_gathered = [e["source"]["node_id"] for e in exec_graph["edges"] if e["destination"]["node_id"] == gathered_id]
    assert into_gathered == echo_ids
    assert all(e["source"]["node_id"] in exec_graph["nodes"] for e in exec_graph["edges"])
    assert state["results"][echo_ids[1]] == {"type": "string_output", "output_meta": None, "value": "b"}
    assert state["errors"] == {}
    assert set(state["executed"]) == set(state["results"]) | set(execution.graph.nodes)
    assert sorted(state["executed_history"]) == sorted(execution.graph.nodes)


def test_failure_is_recorded_and_stops_the_session() -> None:
    execution = start([node("a", "integer", value=1), node("b", "float")], [edge("a.value", "b.value")])
    first = execution.next()
    assert first is not None
    execution.fail(first.id, ValueError("boom"))
    assert execution.errors == {first.id: "ValueError: boom"}
    assert execution.next() is None
    assert execution.is_complete() and execution.has_error()
    assert execution.state()["errors"] == {first.id: "ValueError: boom"}
    assert "b" not in execution.source_prepared_mapping


def test_upstream_value_breaking_a_constraint_fails_the_session() -> None:
    execution = start([node("w", "integer", value=13), node("n", "noise")], [edge("w.value", "n.width")])
    assert run(execution) == ["w"]
    assert execution.has_error()
    (message,) = execution.errors.values()
    assert message.startswith("ValidationError:") and "multiple of 8" in message


def test_nodes_can_be_handed_out_before_earlier_ones_complete() -> None:
    execution = start([node("a", "integer", value=1), node("b", "integer", value=2)])
    first, second = execution.next(), execution.next()
    assert first is not None and second is not None
    assert execution.next() is None and not execution.is_complete()
    execution.complete(second.id, IntegerOutput(value=2))
    execution.complete(first.id, IntegerOutput(value=1))
    assert execution.is_complete()
    assert execution.executed_history == ["b", "a"]


def test_complete_checks_its_arguments() -> None:
    execution = start([node("a", "integer", value=1)])
    prepared = execution.next()
    assert prepared is not None
    with pytest.raises(TypeError):
        execution.complete(prepared.id, StringOutput(value="x"))
    execution.complete(prepared.id, IntegerOutput(value=1))
    with pytest.raises(ValueError, match="not running"):
        execution.complete(prepared.id, IntegerOutput(value=1))
