"""GraphRunner: executes one queue item's graph on this replica, node by node, streaming InvokeAI's events.

Runs on the executor's single diffusion thread (diffusers modules are not thread-safe); node events
cross to the event loop through a queue, and the object store (async) is reached from the thread by
scheduling onto the loop. Tensors between nodes stay in this process for the length of one session.
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Executor
from typing import Any

from pydantic import ValidationError

from serve_app.domain.errors import GenerationFailed, JobCanceled
from serve_app.domain.graph.execution import GraphExecution
from serve_app.domain.graph.graph import Graph
from serve_app.domain.jobs import ClaimedJob
from serve_app.domain.ports import (
    ExecutionEvent,
    ExecutionResult,
    ModelCatalog,
    ModelLoadEvent,
    NodeEvent,
    ObjectStore,
)
from serve_app.inference.graph_context import NodeContext
from serve_app.inference.invocations import IMPLEMENTATIONS
from serve_app.inference.model_cache import ModelCache
from serve_app.inference.threaded import Finished, run_on_thread

# The `kind` of a job request that carries a graph (services.session_queue.graph_request writes it).
GRAPH_KIND = "graph"


class GraphRunner:
    """Implements the graph half of the JobExecutor port (InProcessExecutor delegates graph jobs here)."""

    def __init__(
        self,
        *,
        cache: ModelCache,
        catalog: ModelCatalog,
        store: ObjectStore,
        thread: Executor,
        device: Any,
        dtype: Any,
        progress_interval: float = 0.0,
    ) -> None:
        self._cache = cache
        self._catalog = catalog
        self._store = store
        self._thread = thread
        self._device = device
        self._dtype = dtype
        self._progress_interval = progress_interval

    async def execute(self, job: ClaimedJob) -> AsyncGenerator[ExecutionEvent, None]:
        try:
            graph = Graph.model_validate(job.request["graph"])
        except (KeyError, ValidationError) as exc:
            raise GenerationFailed(f"Unreadable graph: {exc}", error_type="InvalidGraph") from exc
        loop = asyncio.get_running_loop()
        execution = GraphExecution(graph, session_id=job.session_id or str(job.id))

        def work(emit: Callable[[NodeEvent | ModelLoadEvent], None], should_stop: Callable[[], bool]) -> None:
            context = NodeContext(
                job=job,
                graph=job.request["graph"],
                cache=self._cache,
                catalog=self._catalog,
                store=self._store,
                loop=loop,
                device=self._device,
                dtype=self._dtype,
                should_stop=should_stop,
                emit=emit,
                progress_interval=self._progress_interval,
            )
            _run_graph(execution, context, emit)

        async with contextlib.aclosing(run_on_thread(self._thread, work)) as stream:
            async for item in stream:
                if not isinstance(item, Finished):
                    yield item
        yield ExecutionResult(images=[], session=execution.state())


def _run_graph(
    execution: GraphExecution, context: NodeContext, emit: Callable[[NodeEvent | ModelLoadEvent], None]
) -> None:
    """Run every node in order; on a node's error, report it with the session so far and raise."""
    while (node := execution.next()) is not None:
        invocation = node.model_dump(mode="json")
        source_id = execution.source_id(node.id)
        context.begin_node(node, source_id)
        emit(NodeEvent(kind="started", invocation=invocation, source_node_id=source_id))
        try:
            if context.should_stop():
                raise JobCanceled()
            implementation = IMPLEMENTATIONS.get(node.type)
            if implementation is None:
                raise NotImplementedError(f"No implementation for node type {node.type}")
            # The models a node fetches stay pinned in the cache until it returns, never evicted mid-call.
            with context.cache.in_use():
                output = implementation(node, context)
        except JobCanceled:
            raise
        except Exception as exc:
            error_type = type(exc).__name__
            message = str(exc) or error_type
            execution.fail(node.id, f"{error_type}: {message}")
            trace = "".join(traceback.format_exception(exc))
            emit(
                NodeEvent(
                    kind="error",
                    invocation=invocation,
                    source_node_id=source_id,
                    error_type=error_type,
                    error_message=message,
                    error_traceback=trace,
                    session=execution.state(),
                )
            )
            raise GenerationFailed(message, error_type=error_type, traceback=trace) from exc
        execution.complete(node.id, output)
        emit(
            NodeEvent(
                kind="complete",
                invocation=invocation,
                source_node_id=source_id,
                result=output.model_dump(mode="json"),
                images=context.take_images(),
            )
        )
