"""A node that fails, and a job canceled mid-denoise."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
import torch

from serve_app.domain.errors import GenerationFailed
from serve_app.domain.ports import ExecutionEvent, NodeEvent
from serve_app.inference.executor import InProcessExecutor
from serve_app.inference.model_cache import ModelCache
from serve_app.storage.objects import FileObjectStore
from tests.inference.graphs.conftest import SIZE, Demo, graph_job, identifier, run_session, session_graph
from tests.support.invokeai_graphs import enqueue_body, sd1_txt2img

_CANCEL_STEPS = 4
_VALUE_GRAPH = {"id": "value", "nodes": {"v": {"id": "v", "type": "integer", "value": 7}}, "edges": []}


async def test_an_unknown_model_key_fails_the_loader_with_an_error_event(
    executor: InProcessExecutor, demo: Demo
) -> None:
    model = {**identifier(demo.sd15), "key": "no-such-model"}
    graph, ids = sd1_txt2img(model, width=SIZE, height=SIZE, steps=2)
    session = session_graph(enqueue_body(graph, seeds=[1], prompts=["a cat"]))
    events: list[ExecutionEvent] = []

    with pytest.raises(GenerationFailed) as failure:
        async for event in executor.execute(graph_job(session)):
            events.append(event)

    error = events[-1]
    assert isinstance(error, NodeEvent) and error.kind == "error"
    assert error.source_node_id == ids.nodes["sd1_model_loader"]
    assert error.error_type == "ModelNotFound" and "no-such-model" in (error.error_message or "")
    assert error.error_traceback and "Traceback" in error.error_traceback
    assert error.session is not None
    assert error.session["errors"] == {error.invocation["id"]: f"ModelNotFound: {error.error_message}"}
    assert error.invocation["id"] not in error.session["results"]
    assert [e.kind for e in events if isinstance(e, NodeEvent) and e.source_node_id == error.source_node_id] == [
        "started",
        "error",
    ]
    assert failure.value.error_type == "ModelNotFound" and failure.value.traceback == error.error_traceback
    # Nothing after the loader ran.
    assert not any(isinstance(e, NodeEvent) and e.source_node_id == ids.output for e in events)


def _image_count(store: FileObjectStore) -> int:
    folder = Path(store.root) / "images"
    return len(list(folder.iterdir())) if folder.exists() else 0


async def _consume_until_progress(events: AsyncGenerator[ExecutionEvent, None]) -> list[ExecutionEvent]:
    seen: list[ExecutionEvent] = []
    async for event in events:
        seen.append(event)
        if isinstance(event, NodeEvent) and event.kind == "progress":
            break
    return seen


@pytest.mark.parametrize("how", ["close the generator", "cancel the consumer"])
async def test_canceling_mid_denoise_stops_the_diffusion_thread_within_a_step(
    how: str, executor: InProcessExecutor, demo: Demo, store: FileObjectStore, cache: ModelCache
) -> None:
    graph, _ = sd1_txt2img(identifier(demo.sd15), width=SIZE, height=SIZE, steps=_CANCEL_STEPS)
    session = session_graph(enqueue_body(graph, seeds=[1], prompts=["a cat"]))
    unet = cache.get(demo.sd15, "unet", device="cpu", dtype=torch.float32)
    calls = 0
    release = threading.Event()

    def hold_second_pass(module: Any, args: Any) -> None:
        # Runs on the diffusion thread: the second UNet pass waits until the consumer is gone (if the thread gets
        # there before the stop does).
        nonlocal calls
        calls += 1
        if calls == 2:
            release.wait(timeout=60)

    hook = unet.register_forward_pre_hook(hold_second_pass)
    images_before = _image_count(store)
    try:
        events = executor.execute(graph_job(session))
        if how == "close the generator":
            seen = await _consume_until_progress(events)
            await events.aclose()
            with pytest.raises(StopAsyncIteration):
                await anext(events)  # nothing more comes out of a closed job
        else:
            seen = []
            first_progress = asyncio.Event()

            async def consume() -> None:
                async for event in events:
                    seen.append(event)
                    if isinstance(event, NodeEvent) and event.kind == "progress":
                        first_progress.set()

            consumer = asyncio.create_task(consume())
            await asyncio.wait_for(first_progress.wait(), timeout=60)
            # The thread is held in the second pass, so the consumer is waiting for the next event: cancel it.
            consumer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await consumer
        release.set()
        # One diffusion thread: this job runs only once the canceled one has left it.
        after = await run_session(executor, _VALUE_GRAPH)
    finally:
        release.set()
        hook.remove()

    progress = [e for e in seen if isinstance(e, NodeEvent) and e.kind == "progress"]
    assert len(progress) == 1 and progress[0].step == 1
    # Held at the second pass until the consumer was gone, the thread stopped before or right after it (the stop
    # may land before the thread reaches the pass); without the stop it would have run all of them.
    assert calls in (1, 2)
    assert _image_count(store) == images_before  # l2i never ran
    assert after.output("v")["value"] == 7
