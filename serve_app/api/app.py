"""create_app: the FastAPI application both dialects share."""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from serve_app.api.body_limit import BodyLimitMiddleware
from serve_app.api.deps import ApiContext, authenticated
from serve_app.api.enfugue.downloads import router as enfugue_downloads_router
from serve_app.api.enfugue.history import router as enfugue_history_router
from serve_app.api.enfugue.models import router as enfugue_models_router
from serve_app.api.enfugue.routes import router as enfugue_router
from serve_app.api.enfugue.settings import router as enfugue_settings_router
from serve_app.api.enfugue.users import router as enfugue_users_router
from serve_app.api.enfugue.users import self_router as enfugue_self_router
from serve_app.api.errors import install_error_handlers
from serve_app.api.input_guard import reject_unstorable
from serve_app.api.invokeai.auth import router as invokeai_auth_router
from serve_app.api.invokeai.boards import board_images_router as invokeai_board_images_router
from serve_app.api.invokeai.boards import boards_router as invokeai_boards_router
from serve_app.api.invokeai.download_queue import router as invokeai_download_queue_router
from serve_app.api.invokeai.images import router as invokeai_images_router
from serve_app.api.invokeai.model_install import router as invokeai_model_install_router
from serve_app.api.invokeai.model_relationships import router as invokeai_model_relationships_router
from serve_app.api.invokeai.models import router as invokeai_models_router
from serve_app.api.invokeai.queue import router as invokeai_queue_router
from serve_app.api.invokeai.routes import router as invokeai_router
from serve_app.api.invokeai.socket import install_socket
from serve_app.api.invokeai.utilities import router as invokeai_utilities_router
from serve_app.api.log_buffer import install_log_buffer


def create_app(context: ApiContext, *, max_body_bytes: int = 32 * 1024 * 1024) -> FastAPI:
    """Build the app around ready collaborators; no globals, so tests build as many as they like."""
    app = FastAPI(
        title="serve-app",
        version=context.version,
        description="Image generation speaking the InvokeAI and Enfugue APIs.",
        docs_url="/docs",
        openapi_url="/openapi.json",
        # With auth on, every route but login and result files needs a token (api/auth.py); a no-op otherwise.
        # Then values the database cannot hold (NUL, integers past 64 bits) are a 400 (api/input_guard.py).
        dependencies=[Depends(authenticated), Depends(reject_unstorable)],
    )
    app.state.context = context
    # `GET /api/logs`: the recent `serve_app` records of this process (so of this Ingress replica only).
    app.state.log_buffer = install_log_buffer()
    install_error_handlers(app)
    # Both peers answer any origin (Enfugue sets `*`); browsers then send the API key header.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "HEAD"],
        allow_headers=["Authorization", "Content-Type", "X-API-Key"],
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.include_router(invokeai_router)
    app.include_router(invokeai_auth_router)
    app.include_router(invokeai_queue_router)
    app.include_router(invokeai_images_router)
    app.include_router(invokeai_boards_router)
    app.include_router(invokeai_board_images_router)
    app.include_router(invokeai_utilities_router)
    # Before the other /api/v2/models routes, so `/install/...` always reaches the install router.
    app.include_router(invokeai_model_install_router)
    app.include_router(invokeai_models_router)
    app.include_router(invokeai_model_relationships_router)
    app.include_router(invokeai_download_queue_router)
    app.include_router(enfugue_router)
    app.include_router(enfugue_models_router)
    app.include_router(enfugue_downloads_router)
    app.include_router(enfugue_settings_router)
    app.include_router(enfugue_history_router)
    app.include_router(enfugue_users_router)
    app.include_router(enfugue_self_router)
    # Socket.IO at /ws/socket.io; its hub runs for the app's lifespan when context.events is set.
    install_socket(app, context)
    return app
