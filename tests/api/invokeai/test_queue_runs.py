"""InvokeAI scripts against serve-app: build the UI's graph, enqueue, follow events or poll, fetch the image.

The whole stack minus Ray: uvicorn + Socket.IO hub, Postgres queue, dispatcher, graph executor on the
tiny demo models. (tests/serving runs the same flow through Ray Serve.)
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
import socketio
from PIL import Image

from tests.api.invokeai.gallery_support import png_bytes, upload
from tests.support.invokeai_graphs import enqueue_body, sd1_img2img, sd1_inpaint, sd1_txt2img, sdxl_txt2img

pytestmark = pytest.mark.timeout(180)

Q = "/api/v1/queue/default"


async def run(stack, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = await stack.http.post(f"{Q}/enqueue_batch", json=body)
    assert response.status_code == 200, response.text
    return [await stack.wait_item(item_id) for item_id in sorted(response.json()["item_ids"])]


def output_image(item: dict[str, Any], output_node: str) -> str:
    """What scripts do: find the output node's image among the session results."""
    session = item["session"]
    [prepared] = session["source_prepared_mapping"][output_node]
    result = session["results"][prepared]
    assert result["type"] == "image_output"
    return str(result["image"]["image_name"])


async def fetch_png(stack, name: str) -> Image.Image:
    response = await stack.http.get(f"/api/v1/images/i/{name}/full")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


async def test_ui_sd1_graph_two_seeds_by_two_prompts_makes_four_images_on_a_board(invokeai):
    board = (await invokeai.http.post("/api/v1/boards/", params={"board_name": "cats"})).json()
    graph, ids = sd1_txt2img(invokeai.models["demo-sd15"], width=64, height=64, steps=3, board_id=board["board_id"])
    items = await run(invokeai, enqueue_body(graph, seeds=[11, 12], prompts=["a cat", "a dog"]))

    assert [item["status"] for item in items] == ["completed"] * 4
    names = [output_image(item, ids.output) for item in items]
    assert len(set(names)) == 4
    dto = (await invokeai.http.get(f"/api/v1/images/i/{names[0]}")).json()
    assert (dto["board_id"], dto["image_origin"], dto["is_intermediate"]) == (board["board_id"], "internal", False)
    assert dto["session_id"] == items[0]["session_id"]
    assert dto["node_id"] in items[0]["session"]["source_prepared_mapping"][ids.output]
    image = await fetch_png(invokeai, names[0])
    assert image.size == (64, 64)
    assert '"positive_prompt"' in image.info["invokeai_metadata"] and "invokeai_graph" in image.info
    assert (await invokeai.http.get(f"/api/v1/boards/{board['board_id']}")).json()["image_count"] == 4
    pixels = [(await fetch_png(invokeai, name)).tobytes() for name in names]
    assert len(set(pixels)) == 4  # each seed/prompt pair is its own image


async def test_same_seed_and_prompt_give_the_same_pixels(invokeai):
    graph, ids = sd1_txt2img(invokeai.models["demo-sd15"], width=64, height=64, steps=2)
    items = await run(invokeai, enqueue_body(graph, seeds=[5], prompts=["x"], runs=2))
    first, second = [await fetch_png(invokeai, output_image(item, ids.output)) for item in items]
    assert first.tobytes() == second.tobytes()


async def test_ui_sdxl_graph(invokeai):
    graph, ids = sdxl_txt2img(invokeai.models["demo-sdxl"], width=64, height=64, steps=2)
    [item] = await run(invokeai, enqueue_body(graph, seeds=[3], prompts=["a castle"]))
    assert item["status"] == "completed", item.get("error_traceback")
    assert (await fetch_png(invokeai, output_image(item, ids.output))).size == (64, 64)


async def test_img2img_and_inpaint_graphs_on_uploaded_images(invokeai):
    init = await upload(invokeai.http, png_bytes(64, 64, color=(20, 200, 40)), is_intermediate=True)
    mask_image = Image.new("L", (64, 64), 255)
    mask_image.paste(0, (0, 0, 32, 64))  # black: regenerate the left half
    buffer = io.BytesIO()
    mask_image.save(buffer, format="PNG")
    mask = await upload(invokeai.http, buffer.getvalue(), category="mask", is_intermediate=True)
    model = invokeai.models["demo-sd15"]

    img2img, img_ids = sd1_img2img(model, init["image_name"], 0.5, width=64, height=64, steps=4)
    inpaint, inpaint_ids = sd1_inpaint(model, init["image_name"], mask["image_name"], width=64, height=64, steps=4)
    [done] = await run(invokeai, enqueue_body(img2img, seeds=[1], prompts=["a field"]))
    [painted] = await run(invokeai, enqueue_body(inpaint, seeds=[1], prompts=["a field"]))
    assert done["status"] == painted["status"] == "completed", (
        done.get("error_traceback"),
        painted.get("error_traceback"),
    )
    assert (await fetch_png(invokeai, output_image(done, img_ids.output))).size == (64, 64)
    assert (await fetch_png(invokeai, output_image(painted, inpaint_ids.output))).size == (64, 64)


async def test_lora_and_separate_vae_graphs(invokeai):
    model, lora, vae = (invokeai.models[name] for name in ("demo-sd15", "demo-lora-sd15", "demo-vae-sd15"))
    plain, plain_ids = sd1_txt2img(model, width=64, height=64, steps=2)
    with_lora, lora_ids = sd1_txt2img(model, width=64, height=64, steps=2, loras=[(lora, 1.0)])
    with_vae, vae_ids = sd1_txt2img(model, width=64, height=64, steps=2, vae=vae)
    results = []
    for graph, ids in ((plain, plain_ids), (with_lora, lora_ids), (with_vae, vae_ids)):
        [item] = await run(invokeai, enqueue_body(graph, seeds=[9], prompts=["a tree"]))
        assert item["status"] == "completed", item.get("error_traceback")
        results.append((await fetch_png(invokeai, output_image(item, ids.output))).tobytes())
    assert results[1] != results[0] and results[2] != results[0]


async def test_a_failing_node_fails_its_item_and_the_next_item_still_runs(invokeai):
    bad_model = {**invokeai.models["demo-sd15"], "key": "00000000-0000-0000-0000-000000000000"}
    bad, _ = sd1_txt2img(bad_model, width=64, height=64, steps=2)
    good, _ = sd1_txt2img(invokeai.models["demo-sd15"], width=64, height=64, steps=2)
    [failed] = await run(invokeai, enqueue_body(bad, seeds=[1], prompts=["x"]))
    [completed] = await run(invokeai, enqueue_body(good, seeds=[1], prompts=["x"]))

    assert failed["status"] == "failed" and completed["status"] == "completed"
    assert failed["error_type"] == "ModelNotFound" and failed["error_message"] and failed["error_traceback"]
    assert any(failed["session"]["errors"].values())

    retried = await invokeai.http.put(f"{Q}/retry_items_by_id", json=[failed["item_id"]])
    assert retried.json()["retried_item_ids"] == [failed["item_id"]]


async def test_pause_holds_new_items_until_resume(invokeai):
    await invokeai.http.put(f"{Q}/processor/pause")
    graph, _ = sd1_txt2img(invokeai.models["demo-sd15"], width=64, height=64, steps=2)
    [item_id] = (await invokeai.http.post(f"{Q}/enqueue_batch", json=enqueue_body(graph, [1], ["x"]))).json()[
        "item_ids"
    ]
    # The dispatcher polls every 0.2 s; several polls pass without it claiming the paused item.
    for _ in range(3):
        await invokeai.context.jobs.counts()
        await asyncio.sleep(0.25)
        assert (await invokeai.http.get(f"{Q}/i/{item_id}")).json()["status"] == "pending"
    resumed = (await invokeai.http.put(f"{Q}/processor/resume")).json()
    assert resumed["is_started"] is True
    assert (await invokeai.wait_item(item_id))["status"] == "completed"


async def test_cancel_mid_denoise_stops_the_item_and_frees_the_replica(invokeai):
    long_graph, _ = sd1_txt2img(invokeai.models["demo-sd15"], width=64, height=64, steps=400)
    short_graph, _ = sd1_txt2img(invokeai.models["demo-sd15"], width=64, height=64, steps=2)
    [long_id] = (await invokeai.http.post(f"{Q}/enqueue_batch", json=enqueue_body(long_graph, [1], ["x"]))).json()[
        "item_ids"
    ]
    # Wait until it is denoising: the job row's progress is written from the denoise node's steps.
    async with asyncio.timeout(60):
        while True:
            job = await invokeai.context.jobs.get(await _job_id(invokeai, long_id))
            if job.progress_step:
                break
            await asyncio.sleep(0.05)
    canceled = (await invokeai.http.put(f"{Q}/i/{long_id}/cancel")).json()
    assert canceled["status"] == "canceled"
    [short] = await run(invokeai, enqueue_body(short_graph, [1], ["x"]))
    assert short["status"] == "completed"
    final = await invokeai.wait_item(long_id)
    assert final["status"] == "canceled"


async def _job_id(stack, item_id: int) -> Any:
    queue = stack.context.session_queue
    return (await queue.get_item("default", item_id)).id


async def test_a_socketio_client_receives_the_full_event_sequence_for_one_item(invokeai):
    client = socketio.AsyncClient(reconnection=False)
    received: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def on_any(event: str, data: Any = None) -> None:
        received.put_nowait((event, data))

    client.on("*", on_any)
    await client.connect(invokeai.url, socketio_path="/ws/socket.io", transports=["websocket"], wait_timeout=10)
    try:
        await client.call("subscribe_queue", {"queue_id": "default"}, timeout=10)
        graph, ids = sd1_txt2img(invokeai.models["demo-sd15"], width=64, height=64, steps=3)
        result = (await invokeai.http.post(f"{Q}/enqueue_batch", json=enqueue_body(graph, [4], ["x"]))).json()
        [item_id] = result["item_ids"]
        events: list[tuple[str, Any]] = []
        async with asyncio.timeout(60):
            while True:
                event, data = await received.get()
                events.append((event, data))
                if event == "queue_item_status_changed" and data["status"] == "completed":
                    break
    finally:
        await client.disconnect()

    names = [event for event, _ in events]
    assert names[0] == "batch_enqueued" and events[0][1]["batch_id"] == result["batch"]["batch_id"]
    assert names[1] == "queue_item_status_changed" and events[1][1]["status"] == "in_progress"
    node_events = [(event, data) for event, data in events if event.startswith("invocation_")]
    sources = {data["invocation_source_id"] for _, data in node_events}
    assert sources == set(graph["nodes"])  # every node of the graph reported
    for source in sources:
        kinds = [event for event, data in node_events if data["invocation_source_id"] == source]
        assert kinds[0] == "invocation_started" and kinds[-1] == "invocation_complete"
    progress = [data for event, data in node_events if event == "invocation_progress"]
    assert progress and progress[-1]["percentage"] == 1.0
    assert progress[0]["image"]["dataURL"].startswith("data:image/jpeg;base64,")
    [output] = [
        data
        for event, data in node_events
        if event == "invocation_complete" and data["invocation_source_id"] == ids.output
    ]
    assert output["result"]["type"] == "image_output" and output["item_id"] == item_id
    final = events[-1][1]
    assert final["item_id"] == item_id and final["queue_status"]["completed"] == 1
    assert final["batch_status"]["completed"] == 1


async def test_canceling_a_pending_item_never_touches_the_running_one(invokeai):
    graph, _ = sd1_txt2img(invokeai.models["demo-sd15"], width=64, height=64, steps=40)
    [running_id] = (await invokeai.http.post(f"{Q}/enqueue_batch", json=enqueue_body(graph, [1], ["x"]))).json()[
        "item_ids"
    ]
    await invokeai.wait_item(running_id, "in_progress")
    # Paused, the processor finishes what runs and takes nothing new: the next item stays pending.
    await invokeai.http.put(f"{Q}/processor/pause")
    [pending_id] = (await invokeai.http.post(f"{Q}/enqueue_batch", json=enqueue_body(graph, [2], ["x"]))).json()[
        "item_ids"
    ]
    canceled = (await invokeai.http.put(f"{Q}/i/{pending_id}/cancel")).json()
    assert canceled["status"] == "canceled" and "started_at" not in {k for k, v in canceled.items() if v}
    assert (await invokeai.wait_item(running_id))["status"] == "completed"
