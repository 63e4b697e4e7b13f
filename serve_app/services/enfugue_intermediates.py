"""Enfugue's intermediate previews: the latest preview of each output image while an invocation runs.

The engine reports a small preview with its progress events (the latents' RGB approximation, see
inference/nodes/latents.preview). For Enfugue jobs that did not ask `intermediates: false`, the dispatcher hands
those events here; every `every` steps (Enfugue's `enfugue.engine.intermediates`, default 10) the preview is
stored as `intermediates/<job hex>_<i>.png`, i being the output image its `denoise_<i>` node makes, overwriting
the previous one. The status object lists the ones that exist while the job runs (enfugue-api.md §7.2), and
`GET /api/invocation/intermediates/<file>` serves them. They are deleted with the invocation.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import re
import uuid
from typing import Any

from PIL import Image, UnidentifiedImageError

from serve_app.domain.errors import ImageNotFound
from serve_app.domain.imaging import encode_png
from serve_app.domain.ports import NodeEvent, ObjectStore

log = logging.getLogger(__name__)

INTERMEDIATE_STEPS = 10
INTERMEDIATES_PREFIX = "intermediates/"
_DENOISE_NODE = re.compile(r"^denoise_(\d+)$")


def intermediate_name(job_id: uuid.UUID, index: int) -> str:
    return f"{job_id.hex}_{index}.png"


def intermediate_key(name: str) -> str:
    return INTERMEDIATES_PREFIX + name


def wants_previews(request: dict[str, Any]) -> bool:
    """An Enfugue job that did not turn previews off."""
    enfugue = request.get("enfugue")
    return isinstance(enfugue, dict) and enfugue.get("intermediates") is not False


def output_count(request: dict[str, Any]) -> int:
    enfugue = request.get("enfugue")
    count = enfugue.get("num_images") if isinstance(enfugue, dict) else None
    return count if isinstance(count, int) else 0


class IntermediatePreviews:
    """Stores every `every`-th step's preview of Enfugue jobs. Progress events are throttled, so a step that is a
    multiple of `every` may never be reported: a preview is stored when a new multiple has been passed."""

    def __init__(self, store: ObjectStore, every: int = INTERMEDIATE_STEPS) -> None:
        self._store = store
        self._every = every
        self._stored: dict[tuple[uuid.UUID, int], int] = {}  # (job, output index) -> last stored step bucket

    async def on_event(self, job_id: uuid.UUID, request: dict[str, Any], event: NodeEvent) -> None:
        if self._every < 1 or event.kind != "progress" or event.image is None or event.step is None:
            return
        match = _DENOISE_NODE.match(event.source_node_id)
        if match is None or not wants_previews(request):
            return
        index = int(match[1])
        bucket = event.step // self._every
        if bucket == 0 or self._stored.get((job_id, index)) == bucket:
            return
        self._stored[(job_id, index)] = bucket
        png = _png_of(event.image)
        if png is None:
            return
        try:
            await self._store.put(intermediate_key(intermediate_name(job_id, index)), png, "image/png")
        except Exception:  # previews are best effort; the job goes on without them
            log.exception("could not store a preview of job %s", job_id)

    def forget(self, job_id: uuid.UUID) -> None:
        """Drop a finished job's bookkeeping (its files stay until the invocation is deleted)."""
        for key in [key for key in self._stored if key[0] == job_id]:
            del self._stored[key]


def _png_of(preview: dict[str, Any]) -> bytes | None:
    url = preview.get("dataURL")
    if not isinstance(url, str) or ";base64," not in url:
        return None
    try:
        with Image.open(io.BytesIO(base64.b64decode(url.split(";base64,", 1)[1], validate=True))) as image:
            return encode_png(image.convert("RGB"), {})
    except (binascii.Error, ValueError, OSError, UnidentifiedImageError):
        return None


async def existing_intermediates(store: ObjectStore, job_id: uuid.UUID, request: dict[str, Any]) -> list[str]:
    """The status object's entries (`intermediates/<name>`) of the previews stored so far, in output order."""
    if not wants_previews(request):
        return []
    entries = []
    for index in range(output_count(request)):
        name = intermediate_name(job_id, index)
        try:
            await store.get(intermediate_key(name))
        except ImageNotFound:
            continue
        entries.append(intermediate_key(name))
    return entries


def intermediate_keys(job_id: uuid.UUID, request: dict[str, Any]) -> list[str]:
    """Every key a job's previews may have, to delete them with it."""
    return [intermediate_key(intermediate_name(job_id, index)) for index in range(output_count(request))]
