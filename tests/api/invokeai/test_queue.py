"""InvokeAI's session queue routes over the real stack: Postgres, dispatcher, in-process executor, uvicorn.

Semantics that need items to wait use the processor switch (`processor/pause`), as a user would.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.support.invokeai_graphs import enqueue_body, sd1_txt2img

pytestmark = pytest.mark.timeout(120)

Q = "/api/v1/queue/default"


def sd1_body(stack, *, seeds=(1,), prompts=("a cat",), steps=2, **kwargs) -> dict[str, Any]:
    graph, _ = sd1_txt2img(stack.models["demo-sd15"], width=64, height=64, steps=steps)
    return enqueue_body(graph, seeds=list(seeds), prompts=list(prompts), **kwargs)


async def enqueue(stack, body: dict[str, Any]) -> dict[str, Any]:
    response = await stack.http.post(f"{Q}/enqueue_batch", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def paused(stack) -> None:
    response = await stack.http.put(f"{Q}/processor/pause")
    assert response.json() == {"is_started": False, "is_processing": False}


async def test_enqueue_batch_expands_data_by_product_and_reports_descending_ids(invokeai):
    await paused(invokeai)
    result = await enqueue(invokeai, sd1_body(invokeai, seeds=[1, 2], prompts=["a cat", "a dog"]))

    assert (result["queue_id"], result["enqueued"], result["requested"], result["priority"]) == ("default", 4, 4, 0)
    assert result["item_ids"] == sorted(result["item_ids"], reverse=True)
    assert result["batch"]["batch_id"]
    items = (await invokeai.http.post(f"{Q}/items_by_ids", json={"item_ids": result["item_ids"][::-1]})).json()
    pairs = [tuple(value["value"] for value in item["field_values"]) for item in items]
    assert sorted(pairs) == [(1, "a cat"), (1, "a dog"), (2, "a cat"), (2, "a dog")]
    first = items[0]
    # The stored session holds the substituted graph; nothing has run yet.
    seed_node = next(node for node in first["session"]["graph"]["nodes"].values() if node["id"].startswith("seed:"))
    assert seed_node["value"] == first["field_values"][0]["value"]
    assert first["session"]["results"] == {} and first["status"] == "pending"
    assert first["origin"] == first["destination"] == "generate"


async def test_zipped_data_runs_and_prepend_priority(invokeai):
    await paused(invokeai)
    zipped = await enqueue(invokeai, sd1_body(invokeai, seeds=[1, 2], prompts=["a", "b"], zipped=True, runs=3))
    assert (zipped["requested"], zipped["enqueued"]) == (6, 6)
    first = await enqueue(invokeai, sd1_body(invokeai, prepend=True))
    second = await enqueue(invokeai, sd1_body(invokeai, prepend=True))
    assert (first["priority"], second["priority"]) == (1, 2)
    nxt = (await invokeai.http.get(f"{Q}/next")).json()
    assert nxt["item_id"] == second["item_ids"][0]
    listed = (await invokeai.http.get(f"{Q}/list_all")).json()
    assert [item["priority"] for item in listed][:2] == [2, 1]


async def test_queue_size_limit_truncates_instead_of_failing(invokeai):
    await paused(invokeai)
    result = await enqueue(invokeai, sd1_body(invokeai, seeds=list(range(60))))
    assert (result["requested"], result["enqueued"]) == (60, 50)
    more = await enqueue(invokeai, sd1_body(invokeai))
    assert (more["requested"], more["enqueued"], more["item_ids"]) == (1, 0, [])


async def test_views_status_counts_and_legacy_cursor_list(invokeai):
    await paused(invokeai)
    a = await enqueue(invokeai, sd1_body(invokeai, seeds=[1, 2], destination="canvas"))
    await enqueue(invokeai, sd1_body(invokeai))
    http = invokeai.http

    status = (await http.get(f"{Q}/status")).json()
    assert status["queue"] | {"item_id": None} == {
        "queue_id": "default", "item_id": None, "batch_id": None, "session_id": None,
        "pending": 3, "in_progress": 0, "completed": 0, "failed": 0, "canceled": 0, "total": 3,
    }  # fmt: skip
    assert status["processor"] == {"is_started": False, "is_processing": False}
    batch = (await http.get(f"{Q}/b/{a['batch']['batch_id']}/status")).json()
    assert (batch["pending"], batch["total"], batch["destination"]) == (2, 2, "canvas")
    counts = (await http.get(f"{Q}/counts_by_destination", params={"destination": "canvas"})).json()
    assert (counts["destination"], counts["pending"]) == ("canvas", 2)
    ids = (await http.get(f"{Q}/item_ids")).json()
    assert ids["total_count"] == 3 and ids["item_ids"] == sorted(ids["item_ids"], reverse=True)
    assert (await http.get(f"{Q}/current")).json() is None

    page = (await http.get(f"{Q}/list", params={"limit": 2})).json()
    assert page["limit"] == 2 and page["has_more"] and len(page["items"]) == 2
    last = page["items"][-1]
    rest = await http.get(f"{Q}/list", params={"limit": 2, "cursor": last["item_id"], "priority": last["priority"]})
    assert not rest.json()["has_more"] and len(rest.json()["items"]) == 1


async def test_get_item_omits_nulls_and_404s_in_invokeais_words(invokeai):
    await paused(invokeai)
    [item_id] = (await enqueue(invokeai, sd1_body(invokeai)))["item_ids"]
    item = (await invokeai.http.get(f"{Q}/i/{item_id}")).json()
    assert "error_type" not in item and "started_at" not in item and item["status"] == "pending"
    listed = (await invokeai.http.get(f"{Q}/list_all")).json()[0]
    assert listed["error_type"] is None and listed["started_at"] is None  # elsewhere nulls are explicit

    missing = await invokeai.http.get(f"{Q}/i/999999")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Queue item with id 999999 not found in queue default"}
    other_queue = await invokeai.http.get(f"/api/v1/queue/other/i/{item_id}")
    assert other_queue.status_code == 404


async def test_cancel_and_delete_single_items(invokeai):
    await paused(invokeai)
    first, second = (await enqueue(invokeai, sd1_body(invokeai, seeds=[1, 2])))["item_ids"]
    canceled = (await invokeai.http.put(f"{Q}/i/{first}/cancel")).json()
    assert canceled["status"] == "canceled" and canceled["completed_at"] is not None
    again = (await invokeai.http.put(f"{Q}/i/{first}/cancel")).json()
    assert again["status"] == "canceled" and again["updated_at"] == canceled["updated_at"]  # final is final
    assert (await invokeai.http.put(f"{Q}/i/424242/cancel")).status_code == 404

    deleted = await invokeai.http.delete(f"{Q}/i/{second}")
    assert deleted.status_code == 200 and deleted.json() is None
    assert (await invokeai.http.get(f"{Q}/i/{second}")).status_code == 404
    assert (await invokeai.http.delete(f"{Q}/i/424242")).status_code == 200


async def test_bulk_cancels_and_deletes(invokeai):
    await paused(invokeai)
    http = invokeai.http
    a = await enqueue(invokeai, sd1_body(invokeai, seeds=[1, 2], destination="canvas"))
    b = await enqueue(invokeai, sd1_body(invokeai, seeds=[3]))

    assert (await http.put(f"{Q}/cancel_by_batch_ids", json={"batch_ids": [b["batch"]["batch_id"]]})).json() == {
        "canceled": 1
    }
    assert (await http.put(f"{Q}/cancel_by_destination", params={"destination": "canvas"})).json() == {"canceled": 2}
    assert (await http.put(f"{Q}/prune")).json() == {"deleted": 3}

    await enqueue(invokeai, sd1_body(invokeai, seeds=[1, 2, 3]))
    assert (await http.put(f"{Q}/cancel_all_except_current")).json() == {"canceled": 3}
    await enqueue(invokeai, sd1_body(invokeai, seeds=[1, 2]))
    assert (await http.put(f"{Q}/delete_all_except_current")).json() == {"deleted": 2}
    await enqueue(invokeai, sd1_body(invokeai, seeds=[1], destination="gallery"))
    assert (await http.delete(f"{Q}/d/gallery")).json() == {"deleted": 1}
    assert (await http.put(f"{Q}/clear")).json() == {"deleted": 3}
    assert (await http.get(f"{Q}/item_ids")).json() == {"item_ids": [], "total_count": 0}
    assert a["item_ids"]  # (used above through its destination)


async def test_retry_copies_failed_and_canceled_items_only(invokeai):
    await paused(invokeai)
    waiting, canceled = (await enqueue(invokeai, sd1_body(invokeai, seeds=[1, 2])))["item_ids"]
    await invokeai.http.put(f"{Q}/i/{canceled}/cancel")
    # The body is a raw JSON array, as InvokeAI takes it.
    response = await invokeai.http.put(f"{Q}/retry_items_by_id", json=[canceled, waiting, 999])
    assert response.json() == {"queue_id": "default", "retried_item_ids": [canceled]}
    items = (await invokeai.http.get(f"{Q}/list_all")).json()
    [retry] = [item for item in items if item["retried_from_item_id"] == canceled]
    original = next(item for item in items if item["item_id"] == canceled)
    assert retry["status"] == "pending" and retry["session_id"] != original["session_id"]
    assert (retry["batch_id"], retry["field_values"]) == (original["batch_id"], original["field_values"])


# -- 422 before anything is stored ----------------------------------------------------------------------


def _break(mutate):
    def make(stack) -> dict[str, Any]:
        body = sd1_body(stack)
        mutate(body)
        return body

    return make


def _unknown_type(body):
    node = next(iter(body["batch"]["graph"]["nodes"].values()))
    node["type"] = "not_a_node"


def _cycle(body):
    graph = body["batch"]["graph"]
    l2i = next(node for node in graph["nodes"].values() if node["type"] == "l2i")
    noise = next(node for node in graph["nodes"].values() if node["type"] == "noise")
    graph["edges"].append(
        {"source": {"node_id": l2i["id"], "field": "width"}, "destination": {"node_id": noise["id"], "field": "width"}}
    )
    graph["edges"].append(
        {"source": {"node_id": l2i["id"], "field": "height"}, "destination": {"node_id": noise["id"], "field": "seed"}}
    )


def _bad_edge_field(body):
    body["batch"]["graph"]["edges"][0]["source"]["field"] = "no_such_output"


def _missing_edge_node(body):
    body["batch"]["graph"]["edges"][0]["source"]["node_id"] = "missing"


def _wrong_field(body):
    node = next(node for node in body["batch"]["graph"]["nodes"].values() if node["type"] == "noise")
    node["colour"] = "blue"


def _bad_value(body):
    node = next(node for node in body["batch"]["graph"]["nodes"].values() if node["type"] == "denoise_latents")
    node["scheduler"] = "not_a_scheduler"


def _zip_mismatch(body):
    data = body["batch"]["data"]
    body["batch"]["data"] = [[*data[0], {**data[1][0], "items": ["a", "b", "c"]}]]


def _batch_field_not_an_input(body):
    body["batch"]["data"][0][0]["field_name"] = "nope"


def _batch_value_type(body):
    body["batch"]["data"][0][0]["items"] = ["not a seed"]


def _runs_zero(body):
    body["batch"]["runs"] = 0


@pytest.mark.parametrize(
    "mutate",
    [
        _unknown_type,
        _cycle,
        _bad_edge_field,
        _missing_edge_node,
        _wrong_field,
        _bad_value,
        _zip_mismatch,
        _batch_field_not_an_input,
        _batch_value_type,
        _runs_zero,
    ],
)
async def test_malformed_graphs_and_batches_are_422_and_store_nothing(invokeai, mutate):
    body = sd1_body(invokeai)
    mutate(body)
    response = await invokeai.http.post(f"{Q}/enqueue_batch", json=copy.deepcopy(body))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail and {"type", "loc", "msg"} <= detail[0].keys()
    assert "url" not in detail[0]
    assert (await invokeai.http.get(f"{Q}/item_ids")).json()["total_count"] == 0
