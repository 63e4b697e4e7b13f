"""Ingress deployment: the FastAPI app of both dialects, stateless, talking to Queue by handle."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.api.app import create_app
from serve_app.api.deps import ApiContext
from serve_app.serving.args import IngressArgs
from serve_app.serving.clients import QueueClient
from serve_app.serving.wiring import build_store


class IngressReplica:
    """The app is built per replica by `__serve_build_asgi_app__`, after the constructor has its handles."""

    def __init__(self, args: IngressArgs, queue: DeploymentHandle[Any]) -> None:
        self._args = args
        self._queue = QueueClient(queue)

    def __serve_build_asgi_app__(self) -> FastAPI:
        context = ApiContext(jobs=self._queue, store=build_store(self._args.storage), version=self._args.version)
        return create_app(context, max_body_bytes=self._args.max_body_bytes)


# `serve.ingress()` with no app defers to `__serve_build_asgi_app__`, called after the constructor.
Ingress = serve.deployment(name="Ingress", max_ongoing_requests=200, ray_actor_options={"num_cpus": 0.1})(
    serve.ingress()(IngressReplica)
)
