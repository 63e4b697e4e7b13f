"""The whole app as one Ingress replica serves it, over real Postgres and files, for client-level tests.

`live_server(...)` wires every collaborator with `serving.wiring.ingress_runtime` (models, images, boards,
presets, downloads, history, settings, accounts) around the `jobs` gateway it is given (the Queue runtime's
JobService, so jobs really run, or an idle JobService, so they never do), turns accounts on with Enfugue's
default admin `enfugue`/`enfugue`, and serves the app with uvicorn on 127.0.0.1 (lifespan on, as in production)
so clients speak real HTTP. Passwords use cheap argon2 parameters: the hash is still real, only faster.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import uvicorn
from argon2 import PasswordHasher

from serve_app.api.app import create_app
from serve_app.api.deps import ApiContext
from serve_app.services.accounts import AccountService
from serve_app.services.jobs import JobGateway
from serve_app.serving.args import IngressArgs, StorageArgs
from serve_app.serving.wiring import ingress_runtime
from serve_app.storage.account_repository import PgAccountStore
from serve_app.storage.passwords import Argon2Hasher

FAST_HASHER = Argon2Hasher(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
# Enfugue's default user (enfugue-api.md §3), an admin.
ADMIN = ("enfugue", "enfugue")


@dataclass
class LiveServer:
    url: str
    context: ApiContext
    accounts: AccountService


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Run `app` under uvicorn on a free port of 127.0.0.1 for the duration; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        app, lifespan="on", log_level="warning", ws="websockets-sansio", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield url
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@asynccontextmanager
async def app_context(
    jobs: JobGateway,
    *,
    pool: asyncpg.Pool,
    database_url: str,
    storage: StorageArgs,
    models_dir: Path,
    max_waiting_jobs: int,
    auth: bool = True,
) -> AsyncIterator[tuple[ApiContext, AccountService]]:
    """Every service of an Ingress replica, with accounts on (`auth`) and the admin `enfugue` created."""
    args = IngressArgs(
        storage=storage,
        database_url=database_url,
        models_dir=str(models_dir),
        default_model="demo-sd15",
        max_queue_size=50,
        # What the Queue enforces, so `GET /api/settings` reports the real limit.
        max_waiting_jobs=max_waiting_jobs,
    )
    async with ingress_runtime(args, jobs) as context:
        accounts = AccountService(PgAccountStore(pool), FAST_HASHER)
        await accounts.create_user(ADMIN[0], ADMIN[1], ADMIN[1], admin=True, first_name="Default", last_name="User")
        yield replace(context, accounts=accounts, auth_enabled=auth), accounts


@asynccontextmanager
async def live_server(
    jobs: JobGateway,
    *,
    pool: asyncpg.Pool,
    database_url: str,
    storage: StorageArgs,
    models_dir: Path,
    max_waiting_jobs: int,
    auth: bool = True,
) -> AsyncIterator[LiveServer]:
    async with (
        app_context(
            jobs,
            pool=pool,
            database_url=database_url,
            storage=storage,
            models_dir=models_dir,
            max_waiting_jobs=max_waiting_jobs,
            auth=auth,
        ) as (context, accounts),
        serve(create_app(context)) as url,
    ):
        yield LiveServer(url=url, context=context, accounts=accounts)
