"""Enfugue's intermediate previews: the latest preview of each output image while an invocation runs.

The engine reports a small preview with its progress events (the latents' RGB approximation, see
inference/nodes/latents.preview). For Enfugue jobs that did not ask `intermediates: false`, the dispatcher hands
those events here; every N steps (the `intermediate_steps` setting, Enfugue's `enfugue.engine.intermediates`,
default 10, 0 for none; read when a job's first preview arrives) the preview is stored as
`intermediates/<job hex>_<i>.png`, i being the output image its denoise node works on, overwriting the previous
one. The status object lists the ones that exist while the job runs (enfugue-api.md §7.2), and
`GET /api/invocation/intermediates/<file>` serves them.

They are deleted with the invocation, and, as Enfugue's monitor does, once older than an hour
(`intermediates.age`) by `clean_previews_forever`, which each Ingress replica runs: that also removes the previews
of jobs whose replica died mid-run. A finished job's previews are not deleted at once (Enfugue keeps them too): a
client that read a preview's URL just before the job ended can still fetch it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from PIL import Image, UnidentifiedImageError

from serve_app.domain.errors import ImageNotFound
from serve_app.domain.imaging import encode_png
from serve_app.domain.ports import NodeEvent, ObjectStore

log = logging.getLogger(__name__)

INTERMEDIATE_STEPS = 10
INTERMEDIATES_PREFIX = "intermediates/"
# Enfugue's `intermediates.age`: previews older than this are deleted.
PREVIEW_MAX_AGE = timedelta(seconds=3600)
CLEANUP_EVERY_S = 60.0
# The denoise nodes of output image i whose progress is shown: the sample's own (`denoise_<i>`) and, on a canvas,
# each region's, gap fill's and the final outpaint's (services/enfugue_regions.py), each with its refiner pass, so a
# region job shows the region being diffused. Upscale re-diffusion passes are left out (the preview would shrink).
_DENOISE_NODE = re.compile(
    r"^(?:refiner_)?(?:denoise_(?P<sample>\d+)|region_\d+_(?P<region>\d+)(?:_gaps)?_denoise"
    r"|outpaint_(?P<outpaint>\d+)_denoise)$"
)

# The current preview interval in steps (the `intermediate_steps` setting; 0: no previews).
PreviewInterval = Callable[[], Awaitable[int]]


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

    def __init__(
        self, store: ObjectStore, every: int = INTERMEDIATE_STEPS, *, interval: PreviewInterval | None = None
    ) -> None:
        """`interval`, when given, is asked once per job (the server setting); `every` otherwise."""
        self._store = store
        self._every = every
        self._interval = interval
        self._job_every: dict[uuid.UUID, int] = {}  # the interval each running job was given
        self._stored: dict[tuple[uuid.UUID, str], int] = {}  # (job, denoise node) -> last stored step bucket

    async def on_event(self, job_id: uuid.UUID, request: dict[str, Any], event: NodeEvent) -> None:
        if event.kind != "progress" or event.image is None or event.step is None:
            return
        match = _DENOISE_NODE.match(event.source_node_id)
        if match is None or not wants_previews(request):
            return
        every = await self._every_for(job_id)
        if every < 1:
            return
        index = int(next(group for group in match.groups() if group is not None))
        # Each denoise node counts its own steps, so the buckets are kept per node.
        bucket = event.step // every
        if bucket == 0 or self._stored.get((job_id, event.source_node_id)) == bucket:
            return
        self._stored[(job_id, event.source_node_id)] = bucket
        png = _png_of(event.image)
        if png is None:
            return
        try:
            await self._store.put(intermediate_key(intermediate_name(job_id, index)), png, "image/png")
        except Exception:  # previews are best effort; the job goes on without them
            log.exception("could not store a preview of job %s", job_id)

    def forget(self, job_id: uuid.UUID) -> None:
        """Drop a finished job's bookkeeping (its files stay until the invocation is deleted or they age out)."""
        self._job_every.pop(job_id, None)
        for key in [key for key in self._stored if key[0] == job_id]:
            del self._stored[key]

    async def _every_for(self, job_id: uuid.UUID) -> int:
        # Fixed per job, so a setting changed mid-job cannot make the step buckets jump.
        every = self._job_every.get(job_id)
        if every is None:
            every = self._every
            if self._interval is not None:
                try:
                    every = await self._interval()
                except Exception:  # a settings read failing must not fail the job
                    log.exception("could not read the preview interval; using %d", every)
            self._job_every[job_id] = every
        return every


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


class ListingStore(Protocol):
    """An object store that can list a folder (storage/objects.py's stores)."""

    async def list_modified(self, folder: str) -> list[tuple[str, datetime]]:
        """Every key under `folder` and when it was last written."""
        ...

    async def delete(self, keys: Sequence[str]) -> None: ...


async def delete_old_previews(store: ListingStore, now: datetime, max_age: timedelta = PREVIEW_MAX_AGE) -> int:
    """Delete the previews last written more than `max_age` before `now`; how many."""
    old = [key for key, written in await store.list_modified(INTERMEDIATES_PREFIX) if now - written > max_age]
    if old:
        await store.delete(old)
        log.info("deleted %d previews older than %s", len(old), max_age)
    return len(old)


async def clean_previews_forever(
    store: ListingStore,
    *,
    every_s: float = CLEANUP_EVERY_S,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Run `delete_old_previews` every `every_s` seconds until cancelled (a failed round is logged and retried at
    the next). Every Ingress replica may run it: deleting a missing key is no error."""
    while True:
        try:
            await delete_old_previews(store, clock())
        except Exception:
            log.exception("could not clean old previews")
        await asyncio.sleep(every_s)
