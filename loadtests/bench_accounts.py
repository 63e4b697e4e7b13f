"""What accounts cost per request: the same routes with auth off, with a login token (bearer or cookie) and with an
API key, plus the price of a login (argon2id at production parameters) and of the generic REST query language.

In-process app over httpx's ASGI transport (no network noise) on an embedded Postgres in a temporary folder.
Auth on adds one indexed token lookup per request; the figures show what that costs next to the route's own
work. Prints JSON and writes it to loadtests/results/accounts.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

os.environ.setdefault("OMP_NUM_THREADS", "1")

RESULTS = Path(__file__).parent / "results" / "accounts.json"
HOST = "http://serve-app.bench"


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 3),
    }


async def _interleaved(clients: dict[str, tuple[httpx.AsyncClient, str]], runs: int) -> dict[str, list[float]]:
    """Time each (client, path) `runs` times, taking turns request by request, so that load from anything else on
    the machine falls on every variant alike."""
    for client, path in clients.values():
        for _ in range(10):  # warm-up: connection pool, prepared statements, caches
            (await client.get(path)).raise_for_status()
    samples: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(runs):
        for name, (client, path) in clients.items():
            start = time.perf_counter()
            response = await client.get(path)
            samples[name].append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
    return samples


async def _app(database_url: str, folder: Path, *, auth: bool) -> tuple[Any, Any]:
    from serve_app.api.app import create_app
    from serve_app.api.deps import ApiContext
    from serve_app.domain.generation import Limits
    from serve_app.services.accounts import AccountService
    from serve_app.services.history import HistoryService
    from serve_app.services.jobs import JobService
    from serve_app.serving.args import StorageArgs
    from serve_app.serving.wiring import build_catalog, build_store
    from serve_app.storage.account_repository import PgAccountStore
    from serve_app.storage.db import create_pool
    from serve_app.storage.history_repository import PgInvocationHistory
    from serve_app.storage.job_repository import PgJobRepository
    from serve_app.storage.passwords import Argon2Hasher

    pool = await create_pool(database_url, min_size=1, max_size=4)
    accounts = AccountService(PgAccountStore(pool), Argon2Hasher())  # production argon2 parameters
    store = build_store(StorageArgs(url=(folder / "files").as_uri()))
    jobs = JobService(repo=PgJobRepository(pool), catalog=build_catalog(str(folder / "models"), "demo-sd15"),
                      store=store, limits=Limits())  # fmt: skip
    context = ApiContext(jobs=jobs, store=store, version="bench", accounts=accounts, auth_enabled=auth,
                         history=HistoryService(PgInvocationHistory(pool)))  # fmt: skip
    return create_app(context), (pool, accounts)


def _client(app: Any, **options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=HOST, **options)


async def measure(database_url: str, folder: Path, runs: int) -> dict[str, Any]:
    path = "/api/invocation-history?limit=10"
    off_app, (off_pool, _) = await _app(database_url, folder, auth=False)
    on_app, (on_pool, accounts) = await _app(database_url, folder, auth=True)
    await accounts.create_user("bench", "bench-password", "bench-password", admin=False)

    login_ms = []
    async with _client(on_app) as anonymous:
        for _ in range(5):
            start = time.perf_counter()
            response = await anonymous.post("/api/login", json={"username": "bench", "password": "bench-password"})
            login_ms.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
    token = (await accounts.login("bench", "bench-password")).token
    key = (await accounts.create_api_key("bench", "bench")).token

    query = "/api/invocation-history?filter=outputs:1|2&ilike=plan:cat&sort=started:desc&limit=10"
    variants = {
        "off": ({}, off_app, path),
        "bearer": ({"headers": {"Authorization": f"Bearer {token}"}}, on_app, path),
        "cookie": ({"cookies": {"enfugue_token": token}}, on_app, path),
        "api_key": ({"headers": {"X-API-Key": key}}, on_app, path),
        "rest_query": ({}, off_app, query),
    }
    clients = {name: (_client(app, **options), route) for name, (options, app, route) in variants.items()}
    try:
        samples = await _interleaved(clients, runs)
    finally:
        for client, _ in clients.values():
            await client.aclose()
    off = statistics.median(samples["off"])
    results: dict[str, Any] = {"runs": runs, "route": path, "auth_off": _summary(samples["off"])}
    for name in ("bearer", "cookie", "api_key"):
        results[f"auth_{name}"] = _summary(samples[name])
        results[f"auth_{name}_vs_off_p50"] = round(statistics.median(samples[name]) / off, 3)
    results["rest_query"] = {"route": query, **_summary(samples["rest_query"])}
    results["rest_query_vs_plain_p50"] = round(statistics.median(samples["rest_query"]) / off, 3)
    results["login_argon2id"] = _summary(login_ms)
    await off_pool.close()
    await on_pool.close()
    return results


def main() -> None:
    from serve_app.storage.db import upgrade_async
    from serve_app.storage.embedded import EmbeddedPostgres

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-accounts-") as temp:
        folder = Path(temp)
        postgres = EmbeddedPostgres(folder / "pg")
        try:
            url = postgres.start()
            asyncio.run(upgrade_async(url))
            results = asyncio.run(measure(url, folder, args.runs))
        finally:
            postgres.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
