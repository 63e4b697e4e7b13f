"""InstallService: InvokeAI's model installs, as background jobs any replica can read and cancel.

A job's row is written first; a background task on this replica then runs it: waiting → (downloading →
downloads_done →) running → completed | error | cancelled. Remote sources are downloaded as parts (one
DownloadJob per file) into a hidden folder `models_dir/.install-<id>/`, registered through
ModelService.register_local (which moves or copies them into the models folder) and the folder is removed;
an install that fails or is cancelled leaves neither files nor a record, so it can simply be retried.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import logging
import shutil
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import urlsplit

from serve_app.domain.errors import Conflict, Forbidden, InvalidRequest
from serve_app.domain.model_jobs import (
    DownloadJob,
    DownloadStatus,
    HFSource,
    InstallJob,
    InstallStatus,
    LocalSource,
    URLSource,
)
from serve_app.domain.models import ModelChanges, ModelRecord
from serve_app.domain.ports import BusMessage, EventBus, ModelJobStore
from serve_app.services.background import INTERRUPTED, INTERRUPTED_MESSAGE, LEASE_S, JobTasks
from serve_app.services.downloads import DownloadService
from serve_app.services.model_sources import parse_source, source_type, wire_source
from serve_app.services.models import ModelService

log = logging.getLogger(__name__)

TEMP_PREFIX = ".install-"


class RemoteFile(Protocol):
    """One file of a hub install: `path` inside the install folder (a single weights file is just its name)."""

    @property
    def path(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def sha256(self) -> str | None: ...
    @property
    def size(self) -> int | None: ...


class HubClient(Protocol):
    """The Hugging Face Hub (storage.hf_hub.HfHubClient)."""

    async def files(self, source: HFSource, access_token: str | None) -> Sequence[RemoteFile]:
        """The files to fetch for `source`; InvalidRequest for an unknown repo or one with nothing to install."""
        ...

    async def model_urls(self, repo_id: str, access_token: str | None) -> tuple[list[str] | None, bool]:
        """(checkpoint URLs or None, is_diffusers); InvalidRequest for an unknown repo."""
        ...

    async def token_status(self, token: str | None) -> str:
        """ "valid", "invalid" or "unknown"."""
        ...


class InstallCancelled(Exception):
    """The install (or one of its parts) was cancelled."""


class DownloadFailed(Exception):
    """A part of the install could not be downloaded."""


@dataclass
class _Run:
    """One install task's state."""

    job: InstallJob
    text: str  # the source as given: what the record's `source` says
    access_token: str | None
    temp: Path | None = None
    parts: dict[int, DownloadJob] = field(default_factory=dict)
    expected: int = 0
    reported_at: float = float("-inf")


def _huggingface_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "huggingface.co" or host.endswith(".huggingface.co")


class InstallService:
    """Installs from a local path, a URL or a Hugging Face repo; see the module docstring."""

    def __init__(
        self,
        jobs: ModelJobStore,
        downloads: DownloadService,
        models: ModelService,
        hf: HubClient,
        bus: EventBus | None,
        *,
        allowed_roots: Sequence[Path] | None = None,
        progress_interval_s: float = 0.5,
    ) -> None:
        """`allowed_roots` (the models folder and import roots), when given, lets a local path outside them be
        refused at once (403) rather than by the job; ModelService.register_local checks again either way."""
        self._jobs = jobs
        self._downloads = downloads
        self._models = models
        self._hf = hf
        self._bus = bus
        self._roots = None if allowed_roots is None else [Path(root).resolve() for root in allowed_roots]
        self._interval = progress_interval_s
        self._tasks = JobTasks()

    # Jobs

    async def install(
        self,
        source: str,
        *,
        inplace: bool = False,
        access_token: str | None = None,
        config_in: ModelChanges | None = None,
    ) -> InstallJob:
        """Start installing `source`; InvalidRequest (400) for what is not a source, Forbidden (403) outside the
        allowed folders, Conflict (409) when a model from this source is installed. An unfinished install of
        the same source is returned instead of starting a second one."""
        parsed = parse_source(source, inplace=inplace)
        text = source.strip()
        if isinstance(parsed, LocalSource):
            self._check_local(parsed.path)
        if any(record.source == text for record in await self._models.find()):
            raise Conflict(f"A model from {text} is already installed")
        for job in await self._jobs.list_installs():
            if not job.status.finished and job.source == parsed:
                return job
        job = await self._jobs.create_install(
            InstallJob(
                id=0,
                source=parsed,
                inplace=inplace,
                config_in=config_in or ModelChanges(),
                local_path=parsed.path if isinstance(parsed, LocalSource) else "",
            )
        )
        self._tasks.start(job.id, self._run(_Run(job, text, access_token)), name=f"install-{job.id}")
        return job

    async def get(self, job_id: int) -> InstallJob:
        """One install with its download parts; NotFound."""
        return await self._jobs.get_install(job_id)

    async def list(self) -> list[InstallJob]:
        """Every install, oldest first."""
        return await self._jobs.list_installs()

    async def cancel(self, job_id: int) -> InstallJob:
        """Cancel an unfinished install (a finished one is returned as it is); NotFound."""
        job = await self._jobs.get_install(job_id)
        if job.status.finished:
            return job
        job = await self._jobs.update_install(job_id, {"status": InstallStatus.CANCELLED})
        if job.status is not InstallStatus.CANCELLED:
            return job  # it finished in the same instant
        for part in job.download_parts:
            if not part.status.finished:
                await self._downloads.cancel(part.id)  # stops the transfer wherever it runs
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
        await self._publish("model_install_cancelled", {"id": job_id, "source": wire_source(job.source)})
        return job

    async def prune(self) -> int:
        """Forget finished installs (and their parts)."""
        return await self._jobs.prune_installs()

    async def wait(self, job_id: int) -> InstallJob:
        """The install once finished (one running on another replica is polled)."""
        return await self._tasks.wait(job_id, self._jobs.get_install, lambda job: job.status.finished)

    async def keep_leases(self) -> None:
        """Renew the leases of the installs this replica runs; end as errors the ones whose replica stopped."""
        await self._jobs.renew_leases(installs=self._tasks.running(), downloads=(), seconds=LEASE_S)
        for job in await self._jobs.reap_installs(INTERRUPTED, INTERRUPTED_MESSAGE):
            log.warning("install %s was left unfinished by a stopped server", job.id)
            await self._publish(
                "model_install_error",
                {"id": job.id, "source": wire_source(job.source), "error_type": INTERRUPTED,
                 "error": INTERRUPTED_MESSAGE},
            )  # fmt: skip

    async def aclose(self) -> None:
        """Stop this replica's installs: their rows end as errors (interrupted), their files are removed."""
        await self._tasks.aclose()

    # Hugging Face

    async def hugging_face(self, repo_id: str) -> tuple[builtins.list[str] | None, bool]:
        """InvokeAI's `/hugging_face`: the repo's checkpoint URLs (None for diffusers) and whether it is diffusers."""
        return await self._hf.model_urls(repo_id, await self._models.hf_token())

    async def hf_status(self) -> str:
        return await self._hf.token_status(await self._models.hf_token())

    async def hf_login(self, token: str) -> str:
        """Keep the token unless the hub refuses it (one that cannot be checked now is kept)."""
        status = await self._hf.token_status(token.strip())
        if status != "invalid":
            await self._models.set_hf_token(token.strip())
        return status

    async def hf_logout(self) -> str:
        await self._models.clear_hf_token()
        return await self.hf_status()

    # The background task

    def _check_local(self, path: str) -> None:
        if self._roots is None:
            return
        # Relative paths are relative to the models folder, as ModelService.register_local takes them.
        resolved = (self._models.models_dir / Path(path).expanduser()).resolve()
        if not any(resolved.is_relative_to(root) for root in self._roots):
            raise Forbidden(f"{path} is outside the folders models may be installed from")
        if not resolved.exists():
            raise InvalidRequest(f"{path} does not exist", field="source")

    async def _run(self, run: _Run) -> None:
        source = run.job.source
        try:
            await self._publish("model_install_started", {"id": run.job.id, "source": wire_source(source)})
            if isinstance(source, LocalSource):
                record = await self._register(run, Path(source.path).expanduser(), inplace=run.job.inplace)
            else:
                path = await self._download(run, source)
                record = await self._register(run, path, inplace=False)
            await self._completed(run, record)
        except (InstallCancelled, asyncio.CancelledError) as exc:
            await asyncio.shield(self._stopped(run, shutdown=isinstance(exc, asyncio.CancelledError)))
        except Exception as exc:
            await asyncio.shield(self._failed(run, exc))
        finally:
            await asyncio.shield(self._remove_temp(run))

    async def _update(self, run: _Run, changes: dict[str, object]) -> InstallJob:
        job = await self._jobs.update_install(run.job.id, changes)
        if job.status is InstallStatus.CANCELLED:
            raise InstallCancelled()
        run.job = job
        return job

    async def _download(self, run: _Run, source: URLSource | HFSource) -> Path:
        temp = self._models.models_dir / f"{TEMP_PREFIX}{run.job.id}"
        run.temp = temp
        if isinstance(source, URLSource):
            token = run.access_token or (await self._models.hf_token() if _huggingface_url(source.url) else None)
            wanted: builtins.list[tuple[str, Path, str | None, str | None, int | None]] = [
                (source.url, temp, None, None, None)
            ]
        else:
            token = run.access_token or await self._models.hf_token()
            remote = await self._hf.files(source, token)
            wanted = [
                (
                    item.url,
                    temp / PurePosixPath(item.path).parent,
                    PurePosixPath(item.path).name,
                    item.sha256,
                    item.size,
                )
                for item in remote
            ]
        run.expected = sum(size or 0 for *_, size in wanted)
        await self._update(
            run, {"status": InstallStatus.DOWNLOADING, "local_path": str(temp), "total_bytes": run.expected}
        )
        for url, folder, filename, sha256, _ in wanted:
            part = await self._downloads.download(
                url,
                folder,
                filename=filename,
                sha256=sha256,
                access_token=token,
                install_job_id=run.job.id,
                on_progress=functools.partial(self._part_progress, run),
            )
            run.parts[part.id] = part
        await self._publish("model_install_download_started", self._progress_data(run))
        finished: builtins.list[DownloadJob] = []
        for part_id in list(run.parts):
            part = run.parts[part_id] = await self._downloads.wait(part_id)
            # The first part that fails ends the install; the others are cancelled on the way out.
            if part.status is DownloadStatus.CANCELLED:
                raise InstallCancelled()
            if part.status is not DownloadStatus.COMPLETED:
                raise DownloadFailed(f"{part.source}: {part.error_type}: {part.error}")
            finished.append(part)
        done = sum(part.bytes for part in finished)
        await self._update(run, {"status": InstallStatus.DOWNLOADS_DONE, "bytes": done, "total_bytes": done})
        await self._publish("model_install_downloads_complete", {"id": run.job.id, "source": wire_source(source)})
        if isinstance(source, URLSource):
            assert finished[0].download_path is not None
            return Path(finished[0].download_path)
        return temp / PurePosixPath(remote[0].path).parts[0]

    async def _part_progress(self, run: _Run, part: DownloadJob) -> None:
        run.parts[part.id] = part
        moment = time.monotonic()
        if moment - run.reported_at < self._interval and not part.status.finished:
            return
        run.reported_at = moment
        data = self._progress_data(run)
        try:
            await self._jobs.update_install(run.job.id, {"bytes": data["bytes"], "total_bytes": data["total_bytes"]})
            await self._publish("model_install_download_progress", data)
        except Exception:  # progress is best effort; the part's own row is what counts
            log.exception("could not report progress of install %s", run.job.id)

    def _progress_data(self, run: _Run) -> dict[str, Any]:
        parts: builtins.list[dict[str, Any]] = [
            {
                "url": part.source,
                "local_path": part.download_path or part.dest,
                "bytes": part.bytes,
                "total_bytes": part.total_bytes,
            }
            for part in run.parts.values()
        ]
        total = max(run.expected, sum(part["total_bytes"] for part in parts))
        return {
            "id": run.job.id,
            "source": wire_source(run.job.source),
            "local_path": str(run.temp) if run.temp else run.job.local_path,
            "bytes": sum(part["bytes"] for part in parts),
            "total_bytes": total,
            "parts": parts,
        }

    async def _register(self, run: _Run, path: Path, *, inplace: bool) -> ModelRecord:
        await self._update(run, {"status": InstallStatus.RUNNING})
        return await self._models.register_local(
            path, inplace=inplace, changes=run.job.config_in, source=run.text, source_type=source_type(run.job.source)
        )

    async def _completed(self, run: _Run, record: ModelRecord) -> None:
        config_in = run.job.config_in.model_copy(update={"source": run.text, "source_type": record.source_type})
        size = run.job.bytes or record.file_size
        changes = {"config_out_key": record.key, "config_in": config_in, "bytes": size, "total_bytes": size}
        job = await self._jobs.update_install(run.job.id, {"status": InstallStatus.COMPLETED, **changes})
        if job.status is not InstallStatus.COMPLETED:  # cancelled meanwhile (on another replica): undo
            await self._models.delete(record.key)
            return
        await self._publish(
            "model_install_complete",
            {"id": job.id, "source": wire_source(job.source), "key": record.key, "total_bytes": size},
        )

    async def _stopped(self, run: _Run, *, shutdown: bool) -> None:
        job = await self._jobs.get_install(run.job.id)
        if not job.status.finished:
            if shutdown:
                interrupted = {"error_reason": "Interrupted", "error": "The server shut down"}
                await self._jobs.update_install(job.id, {"status": InstallStatus.ERROR, **interrupted})
            elif (await self._jobs.update_install(job.id, {"status": InstallStatus.CANCELLED})).status is (
                InstallStatus.CANCELLED
            ):
                # A part was cancelled on its own (the download queue): the install goes with it.
                await self._publish("model_install_cancelled", {"id": job.id, "source": wire_source(job.source)})
        await self._cancel_parts(run)

    async def _failed(self, run: _Run, exc: Exception) -> None:
        log.warning("install %s of %s failed: %r", run.job.id, run.text, exc)
        error_type, error = type(exc).__name__, str(exc) or type(exc).__name__
        details = {
            "error_reason": error_type,
            "error": error,
            "error_traceback": "".join(traceback.format_exception(exc)),
        }
        job = await self._jobs.update_install(run.job.id, {"status": InstallStatus.ERROR, **details})
        if job.status is InstallStatus.ERROR:
            await self._publish(
                "model_install_error",
                {"id": job.id, "source": wire_source(job.source), "error_type": error_type, "error": error},
            )
        await self._cancel_parts(run)

    async def _cancel_parts(self, run: _Run) -> None:
        for part_id in list(run.parts):
            if not (await self._downloads.get(part_id)).status.finished:
                await self._downloads.cancel(part_id)
            await self._downloads.wait(part_id)  # its task removes its part file

    async def _remove_temp(self, run: _Run) -> None:
        if run.temp is not None:
            await asyncio.to_thread(shutil.rmtree, run.temp, True)

    async def _publish(self, event: str, data: dict[str, Any]) -> None:
        if self._bus is None:
            return
        try:
            await self._bus.publish(BusMessage(event=event, room=None, data={"timestamp": int(time.time()), **data}))
        except Exception:  # an event lost is not worth failing the install for
            log.exception("could not publish %s", event)
