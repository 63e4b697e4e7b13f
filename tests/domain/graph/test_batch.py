"""Batch validation and expansion into sessions."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from serve_app.domain.graph.batch import Batch, count_sessions, expand_batch
from tests.support.invokeai_graphs import enqueue_body, sd1_img2img, sd1_txt2img


def batch(body: dict[str, Any]) -> Batch:
    return Batch.model_validate(body["batch"])


def batch_error(raw: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        Batch.model_validate(raw)
    return str(caught.value.errors()[0]["msg"])


def test_cartesian_product_of_seeds_and_prompts(model: dict[str, Any]) -> None:
    graph, ids = sd1_txt2img(model, width=64, height=64)
    parsed = batch(enqueue_body(graph, [1, 2], ["a cat", "a dog"]))
    assert count_sessions(parsed) == 4
    sessions = list(expand_batch(parsed))
    seen = [(g.nodes[ids.seed].value, g.nodes[ids.positive_prompt].value) for g, _ in sessions]  # type: ignore[union-attr]
    # Earlier groups vary slowest, as in InvokeAI.
    assert seen == [(1, "a cat"), (1, "a dog"), (2, "a cat"), (2, "a dog")]
    _, field_values = sessions[3]
    assert [(fv.node_path, fv.field_name, fv.value) for fv in field_values] == [
        (ids.seed, "value", 2),
        (ids.positive_prompt, "value", "a dog"),
    ]
    # The submitted graph is untouched and every session keeps its id and the rest of its nodes.
    assert parsed.graph.nodes[ids.seed].value == 0  # type: ignore[union-attr]
    assert all(g.id == graph["id"] and set(g.nodes) == set(graph["nodes"]) for g, _ in sessions)


def test_zipped_and_runs(model: dict[str, Any]) -> None:
    graph, ids = sd1_txt2img(model)
    zipped = batch(enqueue_body(graph, [1, 2], ["a", "b"], zipped=True))
    assert count_sessions(zipped) == 2
    assert [[fv.value for fv in fvs] for _, fvs in expand_batch(zipped)] == [[1, "a"], [2, "b"]]

    repeated = batch(enqueue_body(graph, [1, 2], ["a", "b"], zipped=True, runs=3))
    assert count_sessions(repeated) == 6
    values = [[fv.value for fv in fvs] for _, fvs in expand_batch(repeated)]
    assert values == [[1, "a"], [2, "b"]] * 3  # runs are the outer loop

    product = batch(enqueue_body(graph, [1, 2, 3], ["a", "b"], runs=2))
    assert count_sessions(product) == len(list(expand_batch(product))) == 12


def test_no_data_means_runs_sessions(model: dict[str, Any]) -> None:
    graph, _ = sd1_txt2img(model)
    parsed = Batch.model_validate({"graph": graph, "runs": 3})
    assert count_sessions(parsed) == 3
    sessions = list(expand_batch(parsed))
    assert len(sessions) == 3 and all(fvs == [] for _, fvs in sessions)


def test_limit_truncates(model: dict[str, Any]) -> None:
    graph, ids = sd1_txt2img(model)
    parsed = batch(enqueue_body(graph, list(range(10)), ["a"], runs=2))
    limited = list(expand_batch(parsed, limit=3))
    assert [g.nodes[ids.seed].value for g, _ in limited] == [0, 1, 2]  # type: ignore[union-attr]
    assert list(expand_batch(parsed, limit=0)) == []


def test_defaults_and_echo(model: dict[str, Any]) -> None:
    graph, _ = sd1_txt2img(model)
    parsed = batch(enqueue_body(graph, [1], ["a"], origin="canvas", destination="canvas"))
    assert parsed.batch_id and parsed.runs == 1
    assert (parsed.origin, parsed.destination) == ("canvas", "canvas")
    with pytest.raises(ValidationError):
        Batch.model_validate({"graph": graph, "runs": 0})


def test_zip_length_mismatch(model: dict[str, Any]) -> None:
    graph, _ = sd1_txt2img(model)
    body = enqueue_body(graph, [1, 2], ["a"], zipped=True)
    assert batch_error(body["batch"]) == "Value error, Zipped batch items must all have the same length"


def test_field_must_be_an_input_of_an_existing_node(model: dict[str, Any]) -> None:
    graph, ids = sd1_txt2img(model)
    raw = {"graph": graph, "data": [[{"node_path": ids.seed, "field_name": "valu", "items": [1]}]]}
    assert f"Field valu is not an input of node {ids.seed}" in batch_error(raw)
    raw = {"graph": graph, "data": [[{"node_path": "seed:nope", "field_name": "value", "items": [1]}]]}
    assert "Node seed:nope not found in graph" in batch_error(raw)


def test_each_field_only_once(model: dict[str, Any]) -> None:
    graph, ids = sd1_txt2img(model)
    datum = {"node_path": ids.seed, "field_name": "value", "items": [1]}
    assert "more than once" in batch_error({"graph": graph, "data": [[datum], [datum]]})


def test_items_of_one_datum_share_a_type(model: dict[str, Any]) -> None:
    graph, ids = sd1_txt2img(model)
    mixed = {"node_path": ids.positive_prompt, "field_name": "value", "items": ["a", 1]}
    assert "same type" in batch_error({"graph": graph, "data": [[mixed]]})
    numbers = {"node_path": ids.nodes["denoise_latents"], "field_name": "cfg_scale", "items": [1, 2.5]}
    parsed = Batch.model_validate({"graph": graph, "data": [[numbers]]})
    assert [g.nodes[ids.nodes["denoise_latents"]].cfg_scale for g, _ in expand_batch(parsed)] == [1.0, 2.5]  # type: ignore[union-attr]


def test_value_of_the_wrong_type_for_its_field(model: dict[str, Any]) -> None:
    graph, ids = sd1_txt2img(model)
    body = enqueue_body(graph, [], [])
    body["batch"]["data"] = [[{"node_path": ids.seed, "field_name": "value", "items": ["not a number"]}]]
    message = batch_error(body["batch"])
    assert message.startswith("Value error, Invalid value 'not a number' for field value of node " + ids.seed)
    noise = ids.nodes["noise"]
    body["batch"]["data"] = [[{"node_path": noise, "field_name": "width", "items": [64, 100]}]]
    assert "multiple of 8" in batch_error(body["batch"])


def test_expand_batch_checks_values_of_unvalidated_batches(model: dict[str, Any]) -> None:
    graph, ids = sd1_txt2img(model)
    parsed = batch(enqueue_body(graph, [1], ["a"]))
    parsed.data[0][0].items = ["nope"]  # type: ignore[index]
    with pytest.raises(ValueError, match=f"field value of node {ids.seed}"):
        list(expand_batch(parsed))


def test_batch_may_fill_required_inputs(model: dict[str, Any]) -> None:
    graph, ids = sd1_img2img(model, "init.png", 0.5)
    i2l = ids.nodes["i2l"]
    del graph["nodes"][i2l]["image"]
    body = enqueue_body(graph, [1], ["a"])
    with pytest.raises(ValidationError, match="missing required input image"):
        batch(body)
    body["batch"]["data"].append([{"node_path": i2l, "field_name": "image", "items": [{"image_name": "x.png"}]}])
    (session, _), *_ = expand_batch(batch(body))
    assert session.nodes[i2l].image.image_name == "x.png"  # type: ignore[union-attr]


def test_expansion_is_fast_for_thousands_of_sessions(model: dict[str, Any]) -> None:
    graph, ids = sd1_txt2img(model)
    parsed = batch(enqueue_body(graph, list(range(100)), [f"prompt {i}" for i in range(50)]))
    sessions = list(expand_batch(parsed))
    assert len(sessions) == count_sessions(parsed) == 5000
    assert sessions[-1][0].nodes[ids.seed].value == 99  # type: ignore[union-attr]
