"""Ingress deployment: the FastAPI app of both dialects and the Socket.IO server.

Enfugue's routes reach the Queue by handle; InvokeAI's queue, images and boards use this replica's
own pool, and its LISTEN connection brings every replica's events to its Socket.IO clients.
"""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.api.app import create_app
from serve_app.serving.args import IngressArgs
from serve_app.serving.clients import QueueClient
from serve_app.serving.wiring import ingress_runtime


class IngressReplica:
    """The app is built per replica by `__serve_build_asgi_app__`, after the (async) constructor opened
    the database connections."""

    async def __init__(self, args: IngressArgs, queue: DeploymentHandle[Any]) -> None:  # type: ignore[misc]
        self._args = args
        self._stack = contextlib.AsyncExitStack()
        self._context = await self._stack.enter_async_context(ingress_runtime(args, QueueClient(queue)))

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self._context, max_body_bytes=self._args.max_body_bytes)

    async def __del__(self) -> None:
        await self._stack.aclose()


# `serve.ingress()` with no app defers to `__serve_build_asgi_app__`, called after the constructor.
Ingress = serve.deployment(name="Ingress", max_ongoing_requests=200, ray_actor_options={"num_cpus": 0.1})(
    serve.ingress()(IngressReplica)
)
