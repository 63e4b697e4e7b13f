"""The (method, path template) pairs an app serves, read from the app itself (so tests notice new routes)."""

from __future__ import annotations

from typing import Any

# Framework pages that take no input of ours: the OpenAPI document and its two viewers.
DOC_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


def api_routes(app: Any) -> tuple[set[tuple[str, str]], set[str]]:
    """Every (METHOD, path) of the app's API routes, and the paths of its mounts (e.g. Socket.IO's `/ws`).

    FastAPI 0.165 keeps an included router as one entry of `app.routes` whose `effective_route_contexts()` yields
    its routes with the prefix applied; older versions list the routes themselves. Both are read."""
    routes: set[tuple[str, str]] = set()
    mounts: set[str] = set()
    for route in app.routes:
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route]
        for context in contexts:
            methods = getattr(context, "methods", None)
            if methods is None:
                mounts.add(context.path)
            elif context.path not in DOC_PATHS:
                routes |= {(method, context.path) for method in methods}
    return routes, mounts
