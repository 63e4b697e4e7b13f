"""InstallService end to end: real Postgres, the real ModelService (probe, hash, registry), real downloads from a
real HTTP server on 127.0.0.1 (also standing in for the Hugging Face Hub), tiny models built by the tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from serve_app.domain.errors import Conflict, Forbidden, InvalidRequest, NotFound
from serve_app.domain.model_jobs import DownloadStatus, InstallJob, InstallStatus, LocalSource
from serve_app.domain.models import ModelChanges, ModelFamily, ModelFormat, ModelType, SourceType
from tests.support.http_files import FileServer
from tests.support.install_stack import InstallStack, build_models, files_under, install_stack, repo_files

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("local_hub_allowed")]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_models(tmp_path_factory.mktemp("built"))


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as files:
        yield files


Env = InstallStack  # shorter in signatures


@pytest_asyncio.fixture(loop_scope="session")
async def env(pool, server, tmp_path) -> AsyncIterator[InstallStack]:
    async with install_stack(pool, server, tmp_path) as stack:
        yield stack


def hidden_left(models_dir: Path) -> list[str]:
    return [path.name for path in models_dir.iterdir() if path.name.startswith(".")]


async def installed(env: Env, job: InstallJob):
    done = await env.installs.wait(job.id)
    assert done.status is InstallStatus.COMPLETED, (done.error_reason, done.error)
    assert done.config_out_key is not None
    return done, await env.models.get(done.config_out_key)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("lora", (ModelFamily.SD1, ModelType.LORA, ModelFormat.LYCORIS)),
        ("embedding", (ModelFamily.SD1, ModelType.EMBEDDING, ModelFormat.EMBEDDING_FILE)),
        ("checkpoint", (ModelFamily.SD1, ModelType.MAIN, ModelFormat.CHECKPOINT)),
    ],
)
async def test_installs_a_single_file_from_a_url(env: Env, built, name, expected) -> None:
    url = env.server.add_file(built[name])
    job = await env.installs.install(url)
    assert (job.status, job.source.type) == (InstallStatus.WAITING, "url")

    done, record = await installed(env, job)

    assert (record.base, record.type, record.format) == expected
    assert (record.source, record.source_type) == (url, SourceType.URL)
    assert Path(record.path).is_relative_to(env.models_dir) and Path(record.path).is_file()
    assert Path(record.path).read_bytes() == built[name].read_bytes()
    assert record.hash.startswith("blake3:")
    assert hidden_left(env.models_dir) == []
    assert [part.status for part in done.download_parts] == [DownloadStatus.COMPLETED]
    assert done.bytes == done.total_bytes == built[name].stat().st_size
    assert (done.config_in.source, done.config_in.source_type) == (url, SourceType.URL)
    assert [event for event in env.bus.events("model_install_") if event != "model_install_download_progress"] == [
        "model_install_started",
        "model_install_download_started",
        "model_install_downloads_complete",
        "model_install_complete",
    ]
    complete = env.bus.of("model_install_complete")[0]
    assert complete["key"] == record.key and complete["source"] == {"url": url, "access_token": None, "type": "url"}
    assert env.bus.of("model_install_download_progress")[-1]["bytes"] == built[name].stat().st_size


async def test_local_install_copies_or_registers_in_place(env: Env, built) -> None:
    import shutil

    folder = Path(shutil.copytree(built["pipeline"], env.imports / "tiny-sd"))
    copy_job = await env.installs.install(str(folder), config_in=ModelChanges(name="copied", description="mine"))
    assert copy_job.source == LocalSource(path=str(folder), inplace=False) and copy_job.local_path == str(folder)
    copy_done, copied = await installed(env, copy_job)
    assert (copied.base, copied.type, copied.format, copied.name) == (
        ModelFamily.SD1, ModelType.MAIN, ModelFormat.DIFFUSERS, "copied",
    )  # fmt: skip
    assert copied.description == "mine"
    assert Path(copied.path).is_relative_to(env.models_dir) and folder.exists()
    assert files_under(Path(copied.path)) == files_under(folder)
    assert copy_done.download_parts == [] and copy_done.bytes == copied.file_size

    with pytest.raises(Conflict):  # the same source again
        await env.installs.install(str(folder))
    other = Path(shutil.copytree(built["pipeline"], env.imports / "tiny-sd-2"))
    _, in_place = await installed(env, await env.installs.install(str(other), inplace=True))
    assert Path(in_place.path) == other.resolve()
    assert (in_place.source, in_place.source_type) == (str(other), SourceType.PATH)
    assert env.bus.events("model_install_")[-2:] == [
        "model_install_started",
        "model_install_complete",
    ]


async def test_resumes_a_dropped_download(env: Env, built) -> None:
    url = env.server.add_file(built["lora"], "/lora.safetensors")
    env.server.drop_after("/lora.safetensors", 5000)
    _, record = await installed(env, await env.installs.install(url))
    assert Path(record.path).read_bytes() == built["lora"].read_bytes()
    assert [seen.range for seen in env.server.requests("/lora.safetensors")] == [None, "bytes=5000-"]


async def test_a_failure_half_way_leaves_nothing_and_the_same_install_can_be_retried(env: Env, built) -> None:
    url = env.server.add_file(built["lora"], "/flaky.safetensors")
    env.server.drop_after("/flaky.safetensors", 3000, times=4)  # more than the download retries
    failed = await env.installs.wait((await env.installs.install(url)).id)
    assert failed.status is InstallStatus.ERROR
    assert failed.error_reason == "DownloadFailed" and "ConnectionError" in (failed.error or "")
    assert failed.error_traceback and "DownloadFailed" in failed.error_traceback
    assert [part.bytes for part in failed.download_parts] == [4 * 3000]  # each try resumed where the last broke off
    assert env.bus.of("model_install_error")[0]["error_type"] == "DownloadFailed"
    assert files_under(env.models_dir) == [] and hidden_left(env.models_dir) == []
    assert await env.models.find() == []

    _, record = await installed(env, await env.installs.install(url))
    assert record.type is ModelType.LORA
    assert Path(record.path).read_bytes() == built["lora"].read_bytes()


async def test_a_missing_file_is_an_error(env: Env) -> None:
    done = await env.installs.wait((await env.installs.install(env.server.url("/nothing.safetensors"))).id)
    assert (done.status, done.error_reason) == (InstallStatus.ERROR, "DownloadFailed")
    assert "404" in (done.error or "")
    assert files_under(env.models_dir) == []


async def test_an_unrecognised_file_is_an_error_without_a_record(env: Env) -> None:
    url = env.server.add("/junk.safetensors", os.urandom(4000))
    done = await env.installs.wait((await env.installs.install(url)).id)
    assert (done.status, done.error_reason) == (InstallStatus.ERROR, "UnsupportedMediaType")
    assert files_under(env.models_dir) == [] and await env.models.find() == []


async def test_cancel_mid_download_leaves_nothing(env: Env, built) -> None:
    url = env.server.add_file(built["checkpoint"])
    gate = env.server.hold("/files/" + built["checkpoint"].name, after=2000)
    try:
        job = await env.installs.install(url)
        again = await env.installs.install(url)  # the same source while it runs: the same job
        assert again.id == job.id
        await env.bus.wait_for("model_install_download_progress", bytes=2000)
        cancelled = await env.installs.cancel(job.id)
        assert cancelled.status is InstallStatus.CANCELLED
    finally:
        gate.set()
    done = await env.installs.wait(job.id)
    assert done.status is InstallStatus.CANCELLED
    assert [part.status for part in done.download_parts] == [DownloadStatus.CANCELLED]
    assert files_under(env.models_dir) == [] and hidden_left(env.models_dir) == []
    assert await env.models.find() == []
    assert [data["id"] for data in env.bus.of("model_install_cancelled")] == [job.id]
    assert "model_install_complete" not in env.bus.events()


async def test_a_cancel_from_another_replica_stops_the_install(env: Env, built, pool, tmp_path) -> None:
    url = env.server.add_file(built["checkpoint"])
    gate = env.server.hold("/files/" + built["checkpoint"].name, after=2000)
    async with install_stack(pool, env.server, tmp_path / "other", models_dir=env.models_dir) as other:
        try:
            job = await env.installs.install(url)
            await env.bus.wait_for("model_install_download_progress", bytes=2000)
            assert (await other.installs.cancel(job.id)).status is InstallStatus.CANCELLED
        finally:
            gate.set()
        done = await env.installs.wait(job.id)
    assert done.status is InstallStatus.CANCELLED
    assert files_under(env.models_dir) == [] and await env.models.find() == []
    assert [data["id"] for data in other.bus.of("model_install_cancelled")] == [job.id]


async def test_installs_a_diffusers_repo_from_the_hub_with_the_stored_token(env: Env, built) -> None:
    files = repo_files(built["pipeline"])
    env.server.add_hf_repo("org/tiny-sd", files)
    for path in files:  # the hub only serves these to a logged-in user
        env.server.add(f"/org/tiny-sd/resolve/main/{path}", files[path], auth="Bearer hf_good")
    env.server.add("/api/whoami-v2", b'{"name": "me"}', content_type="application/json", auth="Bearer hf_good")
    assert await env.installs.hf_login("hf_bad") == "invalid"
    assert await env.models.hf_token() is None
    assert await env.installs.hf_login("hf_good") == "valid"
    assert await env.installs.hf_status() == "valid"

    done, record = await installed(env, await env.installs.install("org/tiny-sd"))

    assert (record.base, record.type, record.format) == (ModelFamily.SD1, ModelType.MAIN, ModelFormat.DIFFUSERS)
    assert (record.name, record.source, record.source_type) == ("tiny-sd", "org/tiny-sd", SourceType.HF_REPO_ID)
    assert files_under(Path(record.path)) == sorted(files)
    assert len(done.download_parts) == len(files)
    assert done.source.model_dump() == {
        "type": "hf", "repo_id": "org/tiny-sd", "variant": "fp16", "subfolder": None, "access_token": None,
    }  # fmt: skip
    assert hidden_left(env.models_dir) == []
    assert await env.installs.hugging_face("org/tiny-sd") == (None, True)

    _, vae = await installed(env, await env.installs.install("org/tiny-sd::vae"))
    assert (vae.type, vae.format, vae.name) == (ModelType.VAE, ModelFormat.DIFFUSERS, "tiny-sd_vae")
    assert await env.installs.hf_logout() == "invalid"
    assert await env.models.hf_token() is None


async def test_a_hub_file_with_the_wrong_checksum_is_refused(env: Env, built) -> None:
    env.server.add_hf_repo("org/lora", {"pytorch_lora_weights.safetensors": built["lora"].read_bytes()})
    env.server.add("/org/lora/resolve/main/pytorch_lora_weights.safetensors", b"tampered" * 100)
    done = await env.installs.wait((await env.installs.install("org/lora")).id)
    assert done.status is InstallStatus.ERROR
    assert [part.error_type for part in done.download_parts] == ["ChecksumMismatch"]
    assert files_under(env.models_dir) == [] and await env.models.find() == []


async def test_bad_sources_are_refused_before_any_job(env: Env, tmp_path) -> None:
    for source in ("", "   ", "not a source", "ftp://host/x.safetensors", "org/name:onnx", "org/name::../x"):
        with pytest.raises(InvalidRequest):
            await env.installs.install(source)
    with pytest.raises(Forbidden):
        await env.installs.install(str(tmp_path))
    with pytest.raises(Forbidden):
        await env.installs.install(str(env.imports / ".." / ".."))
    with pytest.raises(InvalidRequest):
        await env.installs.install(str(env.imports / "missing"))
    assert await env.installs.list() == []
    with pytest.raises(NotFound):
        await env.installs.get(9999)
    with pytest.raises(NotFound):
        await env.installs.cancel(9999)


async def test_list_and_prune(env: Env, built) -> None:
    done, _ = await installed(env, await env.installs.install(env.server.add_file(built["embedding"])))
    assert [job.id for job in await env.installs.list()] == [done.id]
    assert await env.installs.prune() == 1
    assert await env.installs.list() == []
    assert await env.jobs.list_downloads() == []  # its parts went with it
