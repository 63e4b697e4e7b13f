"""Graph validation: the UI's graphs pass, every broken graph is a 422-style ValidationError."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from serve_app.domain.graph.graph import Graph
from tests.domain.graph.helpers import edge, graph, node
from tests.support.invokeai_graphs import sd1_img2img, sd1_inpaint, sd1_txt2img, sdxl_txt2img


def graph_error(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        Graph.model_validate(data)
    return str(caught.value.errors()[0]["msg"])


def test_ui_graphs_validate(model: dict[str, Any], lora: dict[str, Any], vae: dict[str, Any]) -> None:
    built = [
        sd1_txt2img(model, width=64, height=64, steps=2),
        sd1_txt2img(model, loras=[(lora, 0.5), (lora, 1.0)], vae=vae, board_id="board-1", clip_skip=2),
        sdxl_txt2img({**model, "base": "sdxl"}, loras=[(lora, 0.8)], vae=vae),
        sd1_img2img(model, "init.png", 0.7, loras=[(lora, 1.0)]),
        sd1_inpaint(model, "init.png", "mask.png", strength=0.5, vae=vae),
    ]
    for data, ids in built:
        parsed = Graph.model_validate(data)
        assert parsed.id == data["id"]
        output = parsed.nodes[ids.output]
        assert (output.is_intermediate, output.use_cache) == (False, False)
        assert all(n.is_intermediate for key, n in parsed.nodes.items() if key != ids.output)
        assert parsed.nodes[ids.seed].type == "integer" and parsed.nodes[ids.positive_prompt].type == "string"
    assert Graph.model_validate(built[1][0]).nodes[built[1][1].output].board.board_id == "board-1"  # type: ignore[union-attr]
    img2img = Graph.model_validate(built[3][0])
    assert img2img.nodes[built[3][1].nodes["denoise_latents"]].denoising_start == pytest.approx(0.3)  # type: ignore[union-attr]


def test_unknown_node_type() -> None:
    with pytest.raises(ValidationError) as caught:
        Graph.model_validate(graph([node("a", "not_a_node")]))
    error = caught.value.errors()[0]
    assert error["type"] == "union_tag_invalid"
    assert error["loc"] == ("nodes", "a")


def test_extra_field_on_a_node() -> None:
    with pytest.raises(ValidationError) as caught:
        Graph.model_validate(graph([node("a", "integer", valu=3)]))
    assert caught.value.errors()[0]["type"] == "extra_forbidden"


def test_node_key_must_match_id() -> None:
    data = {"id": "g", "nodes": {"a": node("b", "integer")}, "edges": []}
    message = graph_error(data)
    assert message.startswith("Value error, ")
    assert "a does not match node id b" in message


def test_edge_to_missing_node() -> None:
    message = graph_error(graph([node("a", "integer")], [edge("missing.value", "a.value")]))
    assert message == "Value error, Edge source node missing does not exist in the graph"
    message = graph_error(graph([node("a", "integer")], [edge("a.value", "nowhere.value")]))
    assert "destination node nowhere does not exist" in message


def test_edge_fields_must_exist() -> None:
    nodes = [node("a", "integer"), node("n", "noise")]
    assert "source field val is not an output of node a (integer)" in graph_error(
        graph(nodes, [edge("a.val", "n.seed")])
    )
    message = graph_error(graph(nodes, [edge("a.value", "n.sed")]))
    assert "destination field sed is not an input of node n (noise)" in message
    # Output bookkeeping fields are not connectable either.
    assert "not an output" in graph_error(graph(nodes, [edge("a.type", "n.seed")]))


def test_direct_only_input_cannot_be_connected() -> None:
    nodes = [node("s", "string"), node("i", "image", image={"image_name": "x.png"})]
    assert "board of node i (image) cannot be connected" in graph_error(graph(nodes, [edge("s.value", "i.board")]))


def test_collect_collection_is_filled_by_the_execution_not_by_edges() -> None:
    nodes = [node("a", "collect"), node("b", "collect")]
    assert "collection of node b (collect) cannot be connected" in graph_error(
        graph(nodes, [edge("a.collection", "b.collection")])
    )


def test_two_edges_into_one_field() -> None:
    nodes = [node("a", "integer"), node("b", "integer"), node("n", "noise")]
    message = graph_error(graph(nodes, [edge("a.value", "n.seed"), edge("b.value", "n.seed")]))
    assert "seed of node n (noise) has more than one incoming edge" in message


def test_collect_item_takes_many_edges() -> None:
    nodes = [node("a", "integer"), node("b", "integer"), node("c", "collect")]
    Graph.model_validate(graph(nodes, [edge("a.value", "c.item"), edge("b.value", "c.item")]))


def test_cycle() -> None:
    nodes = [node("a", "integer"), node("b", "integer"), node("c", "integer")]
    edges = [edge("b.value", "c.value"), edge("c.value", "b.value")]
    message = graph_error(graph(nodes, edges))
    assert "Graph contains a cycle" in message and "b, c" in message


def test_incompatible_edge_types() -> None:
    nodes = [node("s", "string"), node("n", "noise")]
    message = graph_error(graph(nodes, [edge("s.value", "n.seed")]))
    assert "s.value -> n.seed connects incompatible types (str -> int)" in message
    model_nodes = [node("m", "main_model_loader", model={"key": "k"}), node("c", "compel")]
    assert "UNetField -> CLIPField" in graph_error(graph(model_nodes, [edge("m.unet", "c.clip")]))


def test_int_feeds_float_and_single_feeds_list() -> None:
    nodes = [node("i", "integer"), node("f", "float")]
    Graph.model_validate(graph(nodes, [edge("i.value", "f.value")]))
    nodes = [node("f", "float"), node("i", "integer")]
    assert "float -> int" in graph_error(graph(nodes, [edge("f.value", "i.value")]))
    # A single LoRA into the loader's `loras` (LoRAField | list[LoRAField]).
    nodes = [node("sel", "lora_selector", lora={"key": "l"}), node("load", "lora_collection_loader")]
    Graph.model_validate(graph(nodes, [edge("sel.lora", "load.loras")]))


def test_missing_required_input() -> None:
    nodes = [node("m", "main_model_loader", model={"key": "k"}), node("c", "compel", prompt="x")]
    assert "Node c (compel) is missing required input clip" in graph_error(graph(nodes))
    Graph.model_validate(graph(nodes, [edge("m.clip", "c.clip")]))
    assert "main_model_loader) is missing required input model" in graph_error(graph([node("m", "main_model_loader")]))


def test_collect_items_must_share_a_type() -> None:
    nodes = [node("i", "integer"), node("s", "string"), node("c", "collect")]
    message = graph_error(graph(nodes, [edge("i.value", "c.item"), edge("s.value", "c.item")]))
    assert "Items collected by node c do not all have the same type" in message


def test_collect_output_is_typed_by_its_items() -> None:
    nodes = [node("s", "string"), node("c", "collect"), node("d", "denoise_latents")]
    message = graph_error(graph(nodes, [edge("s.value", "c.item"), edge("c.collection", "d.positive_conditioning")]))
    assert "c.collection -> d.positive_conditioning connects incompatible types (list[str] ->" in message


def test_iterate_item_is_typed_by_its_collection() -> None:
    nodes = [node("s", "string"), node("c", "collect"), node("it", "iterate"), node("n", "noise"), node("t", "string")]
    base = [edge("s.value", "c.item"), edge("c.collection", "it.collection")]
    assert "(str -> int)" in graph_error(graph(nodes, [*base, edge("it.item", "n.seed")]))
    Graph.model_validate(graph(nodes, [*base, edge("it.item", "t.value")]))


def test_iterate_input_must_be_a_collection() -> None:
    nodes = [node("i", "integer"), node("it", "iterate")]
    assert "Input of iterate node it must be a collection" in graph_error(
        graph(nodes, [edge("i.value", "it.collection")])
    )


def test_topological_order_is_deterministic() -> None:
    nodes = [node("z", "integer"), node("a", "integer"), node("f", "float"), node("c", "collect")]
    edges = [edge("f.value", "c.item"), edge("z.value", "f.value")]
    assert Graph.model_validate(graph(nodes, edges)).topological_order() == ["z", "a", "f", "c"]
