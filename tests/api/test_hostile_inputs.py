"""Every route of both dialects × a hostile input that fits it: a 4xx in the dialect's own error format (Enfugue
`{"errors": [{status, title, detail}]}`, InvokeAI `{"detail": ...}`), never a 500, and nothing stored.

The app is the whole Ingress (every service wired as in production, accounts on, an admin's token on every
request so the input reaches the route), over a database of this module's own; jobs never run. "Nothing stored"
is checked on every case: the row count of every table, the object store's files and the models folder's files
are the same before and after. `test_the_table_covers_every_route` reads the app's routes, so a new route without
a hostile case here fails.

Routes that take no input get a forged credential (401) or, where public, an oversized body (413).
"""

from __future__ import annotations

import base64
import io
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import pytest
import pytest_asyncio
from PIL import Image

from serve_app.api.app import create_app
from serve_app.api.deps import ApiContext
from serve_app.services.jobs import JobService
from serve_app.serving.args import StorageArgs
from serve_app.serving.wiring import build_catalog, build_store
from serve_app.storage.db import create_pool
from serve_app.storage.job_repository import PgJobRepository
from tests.api.conftest import TEST_LIMITS
from tests.conftest import with_database
from tests.support.app_routes import api_routes
from tests.support.live_server import ADMIN, app_context

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

MAX_BODY = 256 * 1024
OVERSIZED = b"x" * (MAX_BODY + 1)
# Path segments as a client sends them (percent-encoded); the router sees them decoded.
TRAVERSAL = "..%2F..%2F..%2Fetc%2Fpasswd"
DOTS = "%2e%2e%2f%2e%2e%2fetc%2fpasswd"
NUL = "a%00b"
SQL_SEGMENT = "x'%20OR%20'1'%3D'1"
SQL = "x' OR '1'='1"
HUGE = "99999999999999999999"  # past a bigint
DEEP = "[" * 100_000  # past Python's recursion limit when parsed
DROP = "name; DROP TABLE users; --"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


# A small file whose header claims 72M pixels (a decompression bomb) and a file that is no image at all.
BOMB = _png(Image.new("1", (9000, 8000)))
NOT_IMAGE = b"#!/bin/sh\nrm -rf /\n"
BOMB_URL = "data:image/png;base64," + base64.b64encode(BOMB).decode()
TEXT_URL = "data:image/png;base64," + base64.b64encode(NOT_IMAGE).decode()


@dataclass(frozen=True)
class Case:
    route: tuple[str, str]  # (METHOD, path template) of the route under attack
    url: str
    status: int
    what: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def invokeai(self) -> bool:
        return self.route[1].startswith(("/api/v1/", "/api/v2/"))

    @property
    def id(self) -> str:
        return f"{self.route[0]} {self.route[1]} [{self.what}]"


def case(method: str, template: str, url: str, status: int, what: str, **kwargs: Any) -> Case:
    return Case((method, template), url, status, what, kwargs)


def forged(method: str, template: str, token: str = SQL, url: str | None = None) -> Case:
    """A route without input: a forged credential (an injection string, a NUL, a huge token) is a 401."""
    return case(method, template, url or template, 401, "forged token", headers={"Authorization": f"Bearer {token}"})


def oversized(method: str, template: str) -> Case:
    """A public route without input: a body past the server's limit is refused before anything runs."""
    return case(method, template, template, 413, "oversized body", content=OVERSIZED)


# The tables stay one case per line or two, as tables (ruff format would spread each call over eight lines).
# fmt: off
ENFUGUE_CASES = [
    forged("GET", "/api"),
    forged("GET", "/api/", token="\x00" * 8),
    forged("GET", "/api/announcements", token="a" * 10_000),
    forged("POST", "/api/announcements/snooze", token=DROP),
    forged("GET", "/api/checkpoints", token="eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."),
    forged("GET", "/api/lora", token="../../etc/passwd"),
    forged("GET", "/api/lycoris"),
    forged("GET", "/api/inversions"),
    forged("GET", "/api/inversion"),
    forged("GET", "/api/model-options"),
    forged("GET", "/api/download"),
    forged("GET", "/api/invocation"),
    forged("POST", "/api/invocation/stop"),
    forged("GET", "/api/keys"),
    forged("GET", "/api/settings"),
    forged("GET", "/self"),
    case("GET", "/api/logs", "/api/logs?since=yesterday%27%20OR%201%3D1", 400, "bad since"),
    case("POST", "/api/login", "/api/login", 400, "non-string credentials",
         json={"username": {"$ne": None}, "password": {"$gt": ""}}),
    case("POST", "/api/login", "/api/login", 401, "injection username", json={"username": SQL, "password": SQL}),
    case("POST", "/api/download", "/api/download", 400, "traversal filename",
         json={"type": "lora", "url": "http://127.0.0.1:9/x", "filename": "../../../etc/cron.d/x"}),
    case("POST", "/api/download", "/api/download", 400, "absolute filename",
         json={"type": "checkpoint", "url": "http://127.0.0.1:9/x", "filename": "/etc/passwd"}),
    case("POST", "/api/download", "/api/download", 400, "file url",
         json={"type": "lora", "url": "file:///etc/passwd", "filename": "x.safetensors"}),
    case("POST", "/api/download/cancel", "/api/download/cancel", 400, "wrong type", json={"url": ["x"]}),
    case("GET", "/api/invocation-history", "/api/invocation-history", 400, "unknown sort column",
         params={"sort": "user_id; DROP TABLE jobs"}),
    case("GET", "/api/invocation-history", "/api/invocation-history", 400, "bad limit", params={"limit": "1 OR 1"}),
    case("GET", "/api/invocation-history", "/api/invocation-history", 400, "unknown filter column",
         params={"filter": "owner:admin"}),
    case("GET", "/api/invocation-history/{invocation_id}", f"/api/invocation-history/{SQL_SEGMENT}", 404,
         "injection id"),
    case("GET", "/api/invocation/images/{file}", f"/api/invocation/images/{TRAVERSAL}", 404, "traversal"),
    case("GET", "/api/invocation/intermediates/{file}", f"/api/invocation/intermediates/{DOTS}", 404, "dots"),
    case("GET", "/api/invocation/thumbnails/{file}", f"/api/invocation/thumbnails/{NUL}.png", 400, "NUL"),
    case("GET", "/api/invocation/{uid}", f"/api/invocation/{SQL_SEGMENT}", 404, "injection uuid"),
    case("DELETE", "/api/invocation/{uid}", f"/api/invocation/{TRAVERSAL}", 404, "traversal"),
    case("POST", "/api/invocation/{uid}/cancel", f"/api/invocation/{NUL}/cancel", 400, "NUL"),
    case("POST", "/api/invoke", "/api/invoke", 400, "non-image data URL",
         json={"prompt": "x", "width": 64, "height": 64, "image": TEXT_URL}),
    case("POST", "/api/invoke", "/api/invoke", 400, "decompression bomb",
         json={"prompt": "x", "width": 64, "height": 64, "image": BOMB_URL}),
    case("POST", "/api/invoke", "/api/invoke", 413, "oversized data URL",
         json={"prompt": "x", "image": "data:image/png;base64," + "A" * MAX_BODY}),
    case("POST", "/api/invoke", "/api/invoke", 400, "server path as image",
         json={"prompt": "x", "width": 64, "height": 64, "image": "/etc/passwd"}),
    case("POST", "/api/invoke", "/api/invoke", 400, "negative size", json={"prompt": "x", "width": -64}),
    case("POST", "/api/invoke", "/api/invoke", 400, "huge size", json={"prompt": "x", "width": 10**18, "height": 8}),
    case("POST", "/api/invoke", "/api/invoke", 400, "wrong types",
         json={"prompt": ["x"], "num_inference_steps": {"$gt": 0}}),
    case("POST", "/api/invoke", "/api/invoke", 400, "traversal checkpoint",
         json={"prompt": "x", "width": 64, "height": 64, "model": "../../../etc/passwd.safetensors"}),
    case("POST", "/api/invoke", "/api/invoke", 400, "absolute checkpoint",
         json={"prompt": "x", "width": 64, "height": 64, "model": "/etc/passwd.ckpt"}),
    case("POST", "/api/invoke", "/api/invoke", 400, "not an object", json=[{"prompt": "x"}]),
    case("POST", "/api/keys", "/api/keys", 400, "non-string name", json={"name": {"$gt": ""}}),
    case("DELETE", "/api/keys/{key_id}", "/api/keys/1%20OR%201%3D1", 400, "injection id"),
    case("GET", "/api/models", "/api/models", 400, "unknown sort column", params={"sort": "name; DROP TABLE x"}),
    case("GET", "/api/models", "/api/models", 400, "unknown filter column", params={"filter": "password:x"}),
    case("GET", "/api/models", "/api/models", 400, "traversal include", params={"include": "../../etc"}),
    case("POST", "/api/models", "/api/models", 400, "wrong types", json={"name": ["x"], "checkpoint": {"a": 1}}),
    case("POST", "/api/models", "/api/models", 400, "negative size",
         json={"name": "x", "checkpoint": "demo-sd15", "size": -512}),
    case("POST", "/api/models", "/api/models", 400, "huge size",
         json={"name": "x", "checkpoint": "demo-sd15", "size": 10**30}),
    case("GET", "/api/models/{name}", f"/api/models/{TRAVERSAL}", 404, "traversal"),
    case("PATCH", "/api/models/{name}", f"/api/models/{SQL_SEGMENT}", 404, "injection name", json={"size": 512}),
    case("DELETE", "/api/models/{name}", f"/api/models/{NUL}", 400, "NUL"),
    case("GET", "/api/models/{name}/status", f"/api/models/{DOTS}/status", 404, "dots"),
    case("POST", "/api/settings", "/api/settings", 400, "negative limit", json={"max_queued_invocations": -1}),
    case("POST", "/api/settings", "/api/settings", 400, "injection limit",
         json={"max_concurrent_downloads": "2; DROP TABLE app_settings"}),
    case("GET", "/api/users", "/api/users", 400, "hidden column filter", params={"filter": "password_hash:x"}),
    case("POST", "/api/users", "/api/users", 400, "traversal username",
         json={"username": "../../etc", "new_password": "p", "repeat_password": "p"}),
    case("GET", "/api/users/{username}", f"/api/users/{SQL_SEGMENT}", 404, "injection username"),
    case("PATCH", "/api/users/{username}", "/api/users/enfugue", 400, "wrong type flag", json={"admin": "perhaps"}),
    case("DELETE", "/api/users/{username}", f"/api/users/{TRAVERSAL}", 404, "traversal"),
]

IMAGE = "/api/v1/images/i/{image_name}"
MODEL = "/api/v2/models/i/{key}"
QUEUE = "/api/v1/queue/{queue_id}"
INVOKEAI_CASES = [
    oversized("GET", "/api/v1/app/version"),
    oversized("GET", "/api/v1/auth/status"),
    case("POST", "/api/v1/auth/login", "/api/v1/auth/login", 422, "non-string credentials",
         json={"email": {"$ne": None}, "password": "x"}),
    forged("POST", "/api/v1/auth/logout"),
    forged("GET", "/api/v1/auth/me", token="\x00admin"),
    # Board images
    case("POST", "/api/v1/board_images/", "/api/v1/board_images/", 404, "unknown board and image",
         json={"board_id": SQL, "image_name": "../../etc/passwd"}),
    case("DELETE", "/api/v1/board_images/", "/api/v1/board_images/", 404, "traversal image",
         json={"image_name": "../../etc/passwd"}),
    case("POST", "/api/v1/board_images/batch", "/api/v1/board_images/batch", 422, "wrong type",
         json={"board_id": "x", "image_names": "../x"}),
    case("POST", "/api/v1/board_images/batch/delete", "/api/v1/board_images/batch/delete", 422, "wrong type",
         json={"image_names": [None]}),
    # Boards
    case("GET", "/api/v1/boards/", "/api/v1/boards/", 422, "unknown order column",
         params={"order_by": "board_name; DROP TABLE boards", "all": "true"}),
    case("POST", "/api/v1/boards/", "/api/v1/boards/", 422, "wrong type flag",
         params={"board_name": "x", "is_private": "perhaps"}),
    case("GET", "/api/v1/boards/{board_id}", f"/api/v1/boards/{TRAVERSAL}", 404, "traversal"),
    case("PATCH", "/api/v1/boards/{board_id}", f"/api/v1/boards/{SQL_SEGMENT}", 404, "injection id",
         json={"board_name": "y"}),
    case("DELETE", "/api/v1/boards/{board_id}", f"/api/v1/boards/{NUL}", 400, "NUL"),
    case("GET", "/api/v1/boards/{board_id}/image_names", f"/api/v1/boards/{DOTS}/image_names", 404, "dots"),
    # Download queue
    forged("GET", "/api/v1/download_queue/"),
    forged("PATCH", "/api/v1/download_queue/"),
    forged("DELETE", "/api/v1/download_queue/i"),
    case("POST", "/api/v1/download_queue/i/", "/api/v1/download_queue/i/", 400, "file source, system dest",
         json={"source": "file:///etc/passwd", "dest": "/etc"}),
    case("GET", "/api/v1/download_queue/i/{id}", "/api/v1/download_queue/i/1%20OR%201%3D1", 422, "injection id"),
    case("DELETE", "/api/v1/download_queue/i/{id}", "/api/v1/download_queue/i/-1", 404, "negative id"),
    # Images
    case("GET", "/api/v1/images/", "/api/v1/images/", 422, "unknown order", params={"order_dir": "DESC; DROP"}),
    case("GET", "/api/v1/images/", "/api/v1/images/", 422, "negative limit", params={"limit": -5}),
    case("POST", "/api/v1/images/delete", "/api/v1/images/delete", 422, "wrong type", json={"image_names": "../x"}),
    case("POST", "/api/v1/images/download", "/api/v1/images/download", 422, "wrong type",
         json={"image_names": {"../x": 1}}),
    case("GET", "/api/v1/images/download/{bulk_download_item_name}", f"/api/v1/images/download/{TRAVERSAL}", 404,
         "traversal"),
    case("GET", IMAGE, f"/api/v1/images/i/{TRAVERSAL}", 404, "traversal"),
    case("PATCH", IMAGE, f"/api/v1/images/i/{DOTS}", 404, "dots", json={"starred": True}),
    case("DELETE", IMAGE, f"/api/v1/images/i/{NUL}", 400, "NUL"),
    case("GET", f"{IMAGE}/full", f"/api/v1/images/i/{TRAVERSAL}/full", 404, "traversal"),
    case("HEAD", f"{IMAGE}/full", f"/api/v1/images/i/{NUL}/full", 400, "NUL"),
    case("GET", f"{IMAGE}/metadata", f"/api/v1/images/i/{SQL_SEGMENT}/metadata", 404, "injection"),
    case("GET", f"{IMAGE}/thumbnail", f"/api/v1/images/i/{DOTS}/thumbnail", 404, "dots"),
    case("GET", f"{IMAGE}/urls", f"/api/v1/images/i/{TRAVERSAL}/urls", 404, "traversal"),
    case("GET", f"{IMAGE}/workflow", f"/api/v1/images/i/{NUL}/workflow", 400, "NUL"),
    case("POST", "/api/v1/images/images_by_names", "/api/v1/images/images_by_names", 422, "wrong type",
         json={"image_names": 5}),
    forged("GET", "/api/v1/images/intermediates"),
    forged("DELETE", "/api/v1/images/intermediates"),
    case("GET", "/api/v1/images/names", "/api/v1/images/names", 422, "wrong type flag",
         params={"starred_first": "perhaps"}),
    case("POST", "/api/v1/images/star", "/api/v1/images/star", 422, "wrong type", json={"image_names": [{"x": 1}]}),
    case("POST", "/api/v1/images/unstar", "/api/v1/images/unstar", 422, "wrong type", json={"image_names": 1}),
    forged("DELETE", "/api/v1/images/uncategorized"),
    case("POST", "/api/v1/images/upload", "/api/v1/images/upload", 415, "not an image",
         params={"image_category": "user", "is_intermediate": "false"},
         files={"file": ("x.png", NOT_IMAGE, "image/png")}),
    case("POST", "/api/v1/images/upload", "/api/v1/images/upload", 400, "decompression bomb",
         params={"image_category": "user", "is_intermediate": "false"},
         files={"file": ("../../bomb.png", BOMB, "image/png")}),
    forged("POST", "/api/v1/images/"),  # InvokeAI's unimplemented upload entry (501 for everyone past auth)
    # Model relationships
    case("POST", "/api/v1/model_relationships/", "/api/v1/model_relationships/", 404, "unknown keys",
         json={"model_key_1": "../../etc", "model_key_2": SQL}),
    case("DELETE", "/api/v1/model_relationships/", "/api/v1/model_relationships/", 422, "wrong type",
         json={"model_key_1": ["x"], "model_key_2": "y"}),
    case("POST", "/api/v1/model_relationships/batch", "/api/v1/model_relationships/batch", 422, "wrong type",
         json={"model_keys": "x"}),
    case("GET", "/api/v1/model_relationships/i/{model_key}", f"/api/v1/model_relationships/i/{TRAVERSAL}", 404,
         "traversal"),
    # Session queue
    case("POST", f"{QUEUE}/enqueue_batch", "/api/v1/queue/default/enqueue_batch", 422, "wrong type graph",
         json={"batch": {"graph": "../../etc/passwd", "runs": -1}, "prepend": "perhaps"}),
    case("GET", f"{QUEUE}/b/{{batch_id}}/status", f"/api/v1/queue/{TRAVERSAL}/b/x/status", 404, "traversal queue"),
    # Queue ids are free text to InvokeAI (an unknown one is an empty queue): routes without other input get forged
    # credentials, and NUL queue ids the input guard's 400.
    forged("PUT", f"{QUEUE}/cancel_all_except_current", url="/api/v1/queue/default/cancel_all_except_current"),
    case("PUT", f"{QUEUE}/cancel_by_batch_ids", "/api/v1/queue/default/cancel_by_batch_ids", 422, "wrong type",
         json={"batch_ids": SQL}),
    case("PUT", f"{QUEUE}/cancel_by_destination", "/api/v1/queue/default/cancel_by_destination", 422,
         "missing destination"),
    case("PUT", f"{QUEUE}/clear", f"/api/v1/queue/{NUL}/clear", 400, "NUL queue"),
    case("GET", f"{QUEUE}/counts_by_destination", f"/api/v1/queue/{DOTS}/counts_by_destination", 404, "dots queue"),
    case("GET", f"{QUEUE}/current", f"/api/v1/queue/{TRAVERSAL}/current", 404, "traversal queue"),
    forged("DELETE", f"{QUEUE}/d/{{destination}}", url="/api/v1/queue/default/d/x"),
    case("PUT", f"{QUEUE}/delete_all_except_current", f"/api/v1/queue/{NUL}/delete_all_except_current", 400,
         "NUL queue"),
    case("GET", f"{QUEUE}/i/{{item_id}}", "/api/v1/queue/default/i/1%20OR%201%3D1", 422, "injection id"),
    case("DELETE", f"{QUEUE}/i/{{item_id}}", "/api/v1/queue/default/i/..%2F1", 404, "traversal id"),
    case("PUT", f"{QUEUE}/i/{{item_id}}/cancel", f"/api/v1/queue/default/i/{HUGE}/cancel", 400, "huge id"),
    case("GET", f"{QUEUE}/item_ids", "/api/v1/queue/default/item_ids", 422, "unknown order",
         params={"order_dir": "ASC; DROP TABLE jobs"}),
    case("POST", f"{QUEUE}/items_by_ids", "/api/v1/queue/default/items_by_ids", 422, "wrong type",
         json={"item_ids": [SQL]}),
    case("GET", f"{QUEUE}/list", "/api/v1/queue/default/list", 422, "negative limit", params={"limit": -1}),
    case("GET", f"{QUEUE}/list_all", f"/api/v1/queue/{TRAVERSAL}/list_all", 404, "traversal queue"),
    case("GET", f"{QUEUE}/next", f"/api/v1/queue/{DOTS}/next", 404, "dots queue"),
    forged("PUT", f"{QUEUE}/processor/pause", url="/api/v1/queue/default/processor/pause"),
    case("PUT", f"{QUEUE}/processor/resume", f"/api/v1/queue/{NUL}/processor/resume", 400, "NUL queue"),
    case("PUT", f"{QUEUE}/prune", f"/api/v1/queue/{TRAVERSAL}/prune", 404, "traversal queue"),
    case("PUT", f"{QUEUE}/retry_items_by_id", "/api/v1/queue/default/retry_items_by_id", 422, "wrong type",
         json={"item_ids": "1; DROP"}),
    case("GET", f"{QUEUE}/status", f"/api/v1/queue/{DOTS}/status", 404, "dots queue"),
    # Utilities
    case("POST", "/api/v1/utilities/dynamicprompts", "/api/v1/utilities/dynamicprompts", 422, "huge max_prompts",
         json={"prompt": "{a|b}", "max_prompts": 10**9}),
    # Model manager
    case("GET", "/api/v2/models/", "/api/v2/models/", 422, "unknown type", params={"model_type": "../../etc"}),
    case("PUT", "/api/v2/models/convert/{key}", f"/api/v2/models/convert/{TRAVERSAL}", 404, "traversal"),
    forged("POST", "/api/v2/models/empty_model_cache"),
    case("GET", "/api/v2/models/get_by_attrs", "/api/v2/models/get_by_attrs", 404, "injection name",
         params={"name": SQL, "type": "main", "base": "sd-1"}),
    forged("GET", "/api/v2/models/hf_login"),
    forged("DELETE", "/api/v2/models/hf_login"),
    case("POST", "/api/v2/models/hf_login", "/api/v2/models/hf_login", 422, "wrong type", json={"token": ["x"]}),
    case("GET", "/api/v2/models/hugging_face", "/api/v2/models/hugging_face", 400, "traversal repo",
         params={"hugging_face_repo": "../../etc/passwd"}),
    case("GET", MODEL, f"/api/v2/models/i/{TRAVERSAL}", 404, "traversal"),
    case("PATCH", MODEL, f"/api/v2/models/i/{SQL_SEGMENT}", 404, "injection key", json={"name": "../../x"}),
    case("DELETE", MODEL, f"/api/v2/models/i/{NUL}", 400, "NUL"),
    case("GET", f"{MODEL}/image", f"/api/v2/models/i/{DOTS}/image", 404, "dots"),
    case("PATCH", f"{MODEL}/image", f"/api/v2/models/i/{TRAVERSAL}/image", 404, "traversal",
         files={"image": ("x.png", NOT_IMAGE, "image/png")}),
    case("DELETE", f"{MODEL}/image", f"/api/v2/models/i/{SQL_SEGMENT}/image", 404, "injection"),
    forged("GET", "/api/v2/models/install"),
    forged("DELETE", "/api/v2/models/install"),
    case("POST", "/api/v2/models/install", "/api/v2/models/install", 403, "system path",
         params={"source": "/etc/passwd"}, json={}),
    case("POST", "/api/v2/models/install", "/api/v2/models/install", 403, "traversal source",
         params={"source": "../../../etc"}, json={}),
    case("GET", "/api/v2/models/install/huggingface", "/api/v2/models/install/huggingface", 400, "traversal repo",
         params={"source": "../../etc/passwd"}),
    case("GET", "/api/v2/models/install/{id}", "/api/v2/models/install/1%3B%20DROP", 422, "injection id"),
    # InvokeAI answers 415 for an unknown install job here.
    case("DELETE", "/api/v2/models/install/{id}", "/api/v2/models/install/-1", 415, "negative id"),
    case("GET", "/api/v2/models/scan_folder", "/api/v2/models/scan_folder", 403, "system folder",
         params={"scan_path": "/etc"}),
    forged("GET", "/api/v2/models/starter_models"),
    forged("GET", "/api/v2/models/stats"),
]

# Values Postgres cannot hold (NUL, integers past 64 bits) anywhere in a request, and JSON nested past the parser's
# recursion limit: each once reached the database or the parser and failed with a 500 (api/input_guard.py).
UNSTORABLE_CASES = [
    case("POST", "/api/models", "/api/models", 400, "NUL in body",
         json={"name": "a\u0000b", "checkpoint": "demo-sd15"}),
    case("POST", "/api/login", "/api/login", 400, "NUL username", json={"username": "a\u0000", "password": "x"}),
    case("POST", "/api/login", "/api/login", 400, "NUL in form", data={"username": "a\u0000", "password": "x"}),
    case("POST", "/api/invoke", "/api/invoke", 400, "NUL prompt",
         json={"prompt": "a\u0000", "width": 64, "height": 64}),
    case("POST", "/api/invoke", "/api/invoke", 400, "deep nesting", content=DEEP,
         headers={"Content-Type": "application/json"}),
    case("GET", "/api/models", "/api/models", 400, "NUL filter", params={"filter": "name:a\u0000"}),
    case("POST", "/api/models", "/api/models", 400, "NaN default", content=b'{"name": "n", "checkpoint": "demo-sd15", '
         b'"guidance_scale": NaN}', headers={"Content-Type": "application/json"}),
    case("GET", "/api/models", "/api/models", 400, "huge offset", params={"offset": HUGE}),
    case("POST", "/api/settings", "/api/settings", 400, "huge limit", json={"max_queued_invocations": int(HUGE)}),
    case("DELETE", "/api/keys/{key_id}", f"/api/keys/{HUGE}", 400, "huge id"),
    case("POST", "/api/v1/auth/login", "/api/v1/auth/login", 400, "NUL email",
         json={"email": "a\u0000", "password": "x"}),
    case("PATCH", "/api/v1/boards/{board_id}", "/api/v1/boards/x", 400, "NUL name", json={"board_name": "\u0000"}),
    case("POST", "/api/v1/boards/", "/api/v1/boards/", 400, "NUL name", params={"board_name": "a\u0000"}),
    case("POST", f"{QUEUE}/enqueue_batch", "/api/v1/queue/default/enqueue_batch", 400, "Infinity in a graph",
         content=b'{"batch": {"graph": {"id": "g", "nodes": {"n": {"id": "n", "type": "float", '
                 b'"value": Infinity}}, "edges": []}, "runs": 1}}',
         headers={"Content-Type": "application/json"}),
    case("GET", f"{QUEUE}/i/{{item_id}}", f"/api/v1/queue/default/i/{HUGE}", 400, "huge id"),
    case("DELETE", f"{QUEUE}/i/{{item_id}}", f"/api/v1/queue/default/i/{HUGE}", 400, "huge id"),
    case("POST", f"{QUEUE}/items_by_ids", "/api/v1/queue/default/items_by_ids", 400, "huge id",
         json={"item_ids": [int(HUGE)]}),
    case("PUT", f"{QUEUE}/retry_items_by_id", "/api/v1/queue/default/retry_items_by_id", 400, "huge id",
         json=[int(HUGE)]),
    case("GET", f"{QUEUE}/list", "/api/v1/queue/default/list", 400, "huge cursor", params={"cursor": HUGE}),
    case("GET", "/api/v1/images/", "/api/v1/images/", 400, "huge offset", params={"offset": HUGE}),
    case("GET", "/api/v1/download_queue/i/{id}", f"/api/v1/download_queue/i/{HUGE}", 400, "huge id"),
    case("DELETE", "/api/v1/download_queue/i/{id}", f"/api/v1/download_queue/i/{HUGE}", 400, "huge id"),
    case("GET", "/api/v2/models/install/{id}", f"/api/v2/models/install/{HUGE}", 400, "huge id"),
    case("DELETE", "/api/v2/models/install/{id}", f"/api/v2/models/install/{HUGE}", 400, "huge id"),
    case("POST", "/api/v1/utilities/dynamicprompts", "/api/v1/utilities/dynamicprompts", 400, "deep nesting",
         content=DEEP, headers={"Content-Type": "application/json"}),
]

# fmt: on

CASES = ENFUGUE_CASES + INVOKEAI_CASES + UNSTORABLE_CASES
# InvokeAI answers these with an HTML page (the browser lands there after Hugging Face's login), errors included.
HTML_ROUTES = frozenset({"/api/v2/models/install/huggingface"})


@dataclass
class Hostile:
    http: httpx.AsyncClient
    pool: asyncpg.Pool
    files: Path
    models: Path

    async def snapshot(self) -> dict[str, Any]:
        """Every table's row count, and every file of the object store and the models folder with its size."""
        tables = await self.pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        counts = {row["tablename"]: await self.pool.fetchval(f'SELECT count(*) FROM "{row["tablename"]}"')
                  for row in tables}  # fmt: skip
        files = {str(path): path.stat().st_size for root in (self.files, self.models) if root.exists()
                 for path in root.rglob("*") if path.is_file()}  # fmt: skip
        return {"rows": counts, "files": files}


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def hostile(
    postgres_server: str, postgres_admin: Any, postgres_template: str, models_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Hostile]:  # fmt: skip
    """One app for the whole table (no case may store anything, and each case checks that)."""
    name = f"hostile_{uuid.uuid4().hex[:12]}"
    await postgres_admin.execute(f"CREATE DATABASE {name} TEMPLATE {postgres_template}")
    url = with_database(postgres_server, name)
    root = tmp_path_factory.mktemp("hostile")
    models = root / "models"
    shutil.copytree(models_dir, models)  # a case that wrote into the models folder must not reach other tests
    storage = StorageArgs(url=(root / "files").as_uri())
    pool = await create_pool(url, min_size=1, max_size=4)
    try:
        store = build_store(storage)
        jobs = JobService(repo=PgJobRepository(pool), catalog=build_catalog(str(models), "demo-sd15"), store=store,
                          limits=TEST_LIMITS)  # fmt: skip
        async with app_context(jobs, pool=pool, database_url=url, storage=storage, models_dir=models,
                               max_waiting_jobs=TEST_LIMITS.max_waiting_jobs) as (context, accounts):  # fmt: skip
            token = (await accounts.login(*ADMIN)).token
            app = create_app(context, max_body_bytes=MAX_BODY)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve-app.test",
                                         headers={"Authorization": f"Bearer {token}"}) as http:  # fmt: skip
                yield Hostile(http=http, pool=pool, files=root / "files", models=models)
    finally:
        await pool.close()
        await postgres_admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def assert_dialect_error(case: Case, response: httpx.Response) -> None:
    if case.route[0] == "HEAD":
        assert response.content == b""  # a HEAD answer has headers only
        return
    if case.route[1] in HTML_ROUTES:
        assert response.headers["content-type"].startswith("text/html")
        return
    body = response.json()
    if case.invokeai:
        assert set(body) == {"detail"}, body
        assert body["detail"]
        return
    assert response.headers["content-type"] == "application/vnd.api+json"
    [error] = body["errors"]
    assert set(error) == {"status", "title", "detail"}
    assert error["status"] == str(response.status_code)
    assert error["title"].endswith("Error") and error["detail"]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_hostile_input_is_a_4xx_in_the_dialects_format_and_stores_nothing(hostile: Hostile, case: Case):
    before = await hostile.snapshot()
    response = await hostile.http.request(case.route[0], case.url, **case.kwargs)
    assert response.status_code == case.status, response.text
    assert_dialect_error(case, response)
    assert await hostile.snapshot() == before


async def test_the_table_covers_every_route():
    app = create_app(ApiContext(jobs=cast(Any, None), store=cast(Any, None), version="test"))
    routes, mounts = api_routes(app)
    assert mounts == {"/ws"}  # Socket.IO (its auth is tests/api/invokeai/test_socket_auth.py)
    covered = {case.route for case in CASES}
    assert sorted(routes - covered) == []  # a route without a hostile case
    assert sorted(covered - routes) == []  # a case for a route that no longer exists
    assert len({case.id for case in CASES}) == len(CASES)


async def test_text_that_only_looks_like_a_nul_or_a_huge_number_passes(hostile: Hostile):
    # A backslash followed by `u0000` (JSON `\\u0000`) is text, and so are digits inside a string.
    prompt = "C:\\u0000\\dir, 123456789012345678901234567890"
    body = {"prompt": prompt, "width": 64, "height": 64, "num_inference_steps": 2}
    response = await hostile.http.post("/api/invoke", json=body)
    assert response.status_code == 200, response.text
    uid = response.json()["data"]["uuid"]
    stored = await hostile.pool.fetchval("SELECT request->'enfugue'->>'prompt' FROM jobs WHERE id = $1", uuid.UUID(uid))
    assert stored == prompt
