"""`/api/v2/models/install...`, `/hugging_face`, `/hf_login` through the ASGI app, on real services: Postgres,
the real ModelService, downloads from a real HTTP server on 127.0.0.1 (which also plays the Hugging Face Hub)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from serve_app.api.app import create_app
from tests.support.golden import golden_body
from tests.support.http_files import FileServer
from tests.support.install_stack import InstallStack, build_models, install_stack, repo_files

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("local_hub_allowed")]

INSTALL = "/api/v2/models/install"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_models(tmp_path_factory.mktemp("built"))


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as files:
        yield files


@pytest_asyncio.fixture(loop_scope="session")
async def stack(pool, server, tmp_path) -> AsyncIterator[InstallStack]:
    async with install_stack(pool, server, tmp_path) as services:
        yield services


@pytest_asyncio.fixture(loop_scope="session")
async def http(stack: InstallStack) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(stack.context()))
    async with httpx.AsyncClient(transport=transport, base_url="http://serve-app.test") as client:
        yield client


async def finished(http: httpx.AsyncClient, stack: InstallStack, job_id: int) -> dict[str, Any]:
    await stack.installs.wait(job_id)
    response = await http.get(f"{INSTALL}/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_local_install_matches_invokeai_field_for_field(http, stack, built) -> None:
    folder = Path(shutil.copytree(built["pipeline"], stack.imports / "tiny-sd15"))
    response = await http.post(INSTALL, params={"source": str(folder), "inplace": "true"}, json={})
    assert response.status_code == 201, response.text
    posted = response.json()
    expected = golden_body("07-models-install-post.json")
    assert list(posted) == list(expected)
    assert posted["config_in"] == expected["config_in"]
    assert posted["source"] == {"path": str(folder), "inplace": True, "type": "local"}
    assert list(posted["source"]) == list(expected["source"])
    assert (posted["status"], posted["local_path"], posted["inplace"]) == ("waiting", str(folder), True)
    assert (posted["config_out"], posted["download_parts"], posted["error"]) == (None, [], None)

    done = await finished(http, stack, posted["id"])
    completed = golden_body("08-models-install-job-completed.json")
    assert list(done) == list(completed)
    assert done["status"] == "completed"
    assert done["config_in"] == {**completed["config_in"], "source": str(folder)}
    config = done["config_out"]
    assert list(config) == list(completed["config_out"])
    assert (config["name"], config["base"], config["type"], config["format"]) == (
        "tiny-sd15",
        "sd-1",
        "main",
        "diffusers",
    )
    assert (config["path"], config["source"], config["source_type"]) == (str(folder), str(folder), "path")
    assert config["description"] == "sd-1 main model tiny-sd15"
    assert done["bytes"] == done["total_bytes"] == config["file_size"]

    listed = (await http.get(INSTALL)).json()
    assert listed == [done]
    assert list(listed[0]) == list(golden_body("09-models-install-list.json")[0])


async def test_url_install_shows_its_download_part(http, stack, built) -> None:
    url = stack.server.add_file(built["lora"])
    posted = (await http.post(INSTALL, params={"source": url}, json={"name": "ink", "trigger_phrases": ["ink"]})).json()
    assert posted["source"] == {"url": url, "access_token": None, "type": "url"}
    done = await finished(http, stack, posted["id"])
    assert done["status"] == "completed"
    assert (done["config_out"]["name"], done["config_out"]["type"], done["config_out"]["format"]) == (
        "ink", "lora", "lycoris",
    )  # fmt: skip
    assert done["config_out"]["trigger_phrases"] == ["ink"]
    (part,) = done["download_parts"]
    assert list(part) == [
        "id", "dest", "download_path", "status", "bytes", "total_bytes", "error_type", "error", "source",
        "access_token", "priority", "job_started", "job_ended", "content_type",
    ]  # fmt: skip
    assert (part["status"], part["source"], part["access_token"]) == ("completed", url, None)
    assert part["bytes"] == part["total_bytes"] == built["lora"].stat().st_size
    assert isinstance(part["job_started"], str) and isinstance(part["job_ended"], str)


async def test_status_codes(http, stack, built, tmp_path) -> None:
    assert (await http.post(INSTALL, params={"source": "org/name"})).status_code == 422  # the body is required
    assert (await http.post(INSTALL, json={})).status_code == 422  # so is the source
    bad = await http.post(INSTALL, params={"source": "not a model source"}, json={})
    assert bad.status_code == 400 and "not a path" in bad.json()["detail"]
    assert (await http.post(INSTALL, params={"source": "org/name:onnx"}, json={})).status_code == 400
    assert (await http.post(INSTALL, params={"source": str(tmp_path)}, json={})).status_code == 403
    assert (await http.post(INSTALL, params={"source": str(stack.imports / "missing")}, json={})).status_code == 400
    assert (await http.post(INSTALL, params={"source": "/x"}, json={"colour": "red"})).status_code == 422

    assert (await http.get(f"{INSTALL}/4242")).json() == {"detail": "No job with id 4242 known"}
    assert (await http.get(f"{INSTALL}/4242")).status_code == 404
    assert (await http.delete(f"{INSTALL}/4242")).status_code == 415  # sic, as InvokeAI
    assert (await http.get(f"{INSTALL}/abc")).status_code == 422

    url = stack.server.add_file(built["embedding"])
    first = (await http.post(INSTALL, params={"source": url}, json={})).json()
    assert (await finished(http, stack, first["id"]))["status"] == "completed"
    again = await http.post(INSTALL, params={"source": url}, json={})
    assert again.status_code == 409 and url in again.json()["detail"]


async def test_cancel_and_prune(http, stack, built) -> None:
    url = stack.server.add_file(built["checkpoint"])
    gate = stack.server.hold("/files/" + built["checkpoint"].name, after=1000)
    try:
        posted = (await http.post(INSTALL, params={"source": url}, json={})).json()
        await stack.bus.wait_for("model_install_download_progress", bytes=1000)
        cancelled = await http.delete(f"{INSTALL}/{posted['id']}")
        assert (cancelled.status_code, cancelled.json()) == (201, None)
    finally:
        gate.set()
    done = await finished(http, stack, posted["id"])
    assert done["status"] == "cancelled"
    assert [part["status"] for part in done["download_parts"]] == ["cancelled"]
    assert (await http.get("/api/v2/models/")).json()["models"] == []

    pruned = await http.delete(INSTALL)
    assert (pruned.status_code, pruned.content) == (204, b"")
    assert (await http.get(INSTALL)).json() == []


async def test_hugging_face_lookup(http, stack, built) -> None:
    stack.server.add_hf_repo("org/tiny-sd", repo_files(built["pipeline"]))
    stack.server.add_hf_repo("org/loras", {"a.safetensors": b"1", "b.safetensors": b"2", "README.md": b""})
    stack.server.add("/api/models/org/missing", b"{}", status=401, headers={"X-Error-Code": "RepoNotFound"})
    lookup = "/api/v2/models/hugging_face"

    assert (await http.get(lookup, params={"hugging_face_repo": "org/tiny-sd"})).json() == {
        "urls": None,
        "is_diffusers": True,
    }
    loose = (await http.get(lookup, params={"hugging_face_repo": "org/loras"})).json()
    assert loose == {
        "urls": [stack.server.url(f"/org/loras/resolve/main/{name}") for name in ("a.safetensors", "b.safetensors")],
        "is_diffusers": False,
    }
    for params in ({"hugging_face_repo": "org/missing"}, {"hugging_face_repo": "not a repo"}, {}):
        response = await http.get(lookup, params=params)
        assert (response.status_code, response.json()) == (400, {"detail": "No HuggingFace repository found"})


async def test_hugging_face_install_page(http, stack, built) -> None:
    stack.server.add_hf_repo("org/tiny-sd", repo_files(built["pipeline"]))
    stack.server.add_hf_repo("org/loras", {"a.safetensors": b"1", "b.safetensors": b"2"})
    page = "/api/v2/models/install/huggingface"

    started = await http.get(page, params={"source": "org/tiny-sd"})
    assert started.status_code == 201 and started.headers["content-type"].startswith("text/html")
    assert "Model Install Started" in started.text and "org/tiny-sd" in started.text
    (job,) = (await http.get(INSTALL)).json()
    assert job["source"]["repo_id"] == "org/tiny-sd"
    assert (await finished(http, stack, job["id"]))["config_out"]["source"] == "org/tiny-sd"

    several = await http.get(page, params={"source": "org/loras"})
    assert several.status_code == 200 and "multiple models" in several.text
    unknown = await http.get(page, params={"source": "org/<script>"})
    assert unknown.status_code == 400 and "<script>" not in unknown.text
    assert (await http.get(page, params={"source": "org/tiny-sd"})).status_code == 409


async def test_hf_login(http, stack) -> None:
    stack.server.add("/api/whoami-v2", b'{"name": "me"}', content_type="application/json", auth="Bearer hf_good")
    login = "/api/v2/models/hf_login"
    assert (await http.get(login)).json() == "invalid"  # no token yet
    assert (await http.post(login, json={"token": "hf_bad"})).json() == "invalid"
    assert (await http.get(login)).json() == "invalid"  # a refused token is not kept
    assert (await http.post(login, json={"token": "hf_good"})).json() == "valid"
    assert (await http.get(login)).json() == "valid"
    assert (await http.post(login, json={})).status_code == 422
    assert (await http.delete(login)).json() == "invalid"
    assert await stack.models.hf_token() is None


async def test_unconfigured_installs_answer_503(stack) -> None:
    transport = httpx.ASGITransport(app=create_app(stack.context(installs=None)))
    async with httpx.AsyncClient(transport=transport, base_url="http://serve-app.test") as client:
        response = await client.get(INSTALL)
    assert response.status_code == 503
