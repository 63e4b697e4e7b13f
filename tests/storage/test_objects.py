"""ObjectStore adapters: a local folder, and S3 against moto's server over real HTTP."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto.server import ThreadedMotoServer

from serve_app.domain.errors import ImageNotFound, InvalidRequest
from serve_app.storage import objects
from serve_app.storage.objects import FileObjectStore, S3ObjectStore, batched, make_object_store

CREDENTIALS = {"region": "us-east-1", "access_key_id": "testing", "secret_access_key": "testing"}
TRAVERSAL_KEYS = ["../x", "/etc/passwd", "a/../../b", "a\\b", "a//b", "./a", "a/\x00", ""]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def raw_s3(s3_endpoint: str):
    """A plain boto3 client, to check what actually landed in the bucket."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def bucket(raw_s3) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    raw_s3.create_bucket(Bucket=name)
    return name


def _bucket_keys(raw_s3, bucket: str) -> list[str]:
    return sorted(obj["Key"] for obj in raw_s3.list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> FileObjectStore | S3ObjectStore:
    if request.param == "file":
        return FileObjectStore(tmp_path / "outer" / "root")
    endpoint = request.getfixturevalue("s3_endpoint")
    return S3ObjectStore(request.getfixturevalue("bucket"), endpoint_url=endpoint, **CREDENTIALS)


async def test_round_trip_and_overwrite(store: FileObjectStore | S3ObjectStore) -> None:
    await store.put("images/a.png", b"first", "image/png")
    assert await store.get("images/a.png") == b"first"
    await store.put("images/a.png", b"second", "image/png")
    assert await store.get("images/a.png") == b"second"


async def test_get_missing_raises_image_not_found(store: FileObjectStore | S3ObjectStore) -> None:
    with pytest.raises(ImageNotFound):
        await store.get("images/missing.png")
    await store.put("images/a.png", b"x", "image/png")
    # A "folder" is not an object either.
    with pytest.raises(ImageNotFound):
        await store.get("images")


async def test_delete_removes_and_ignores_missing(store: FileObjectStore | S3ObjectStore) -> None:
    await store.put("images/a.png", b"a", "image/png")
    await store.put("images/b.png", b"b", "image/png")
    await store.delete(["images/a.png", "images/never.png", "images/a.png"])
    with pytest.raises(ImageNotFound):
        await store.get("images/a.png")
    assert await store.get("images/b.png") == b"b"
    await store.delete([])


async def test_list_modified_lists_a_folder_with_write_times(store: FileObjectStore | S3ObjectStore) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    assert await store.list_modified("intermediates/") == []
    await store.put("intermediates/a_0.png", b"a", "image/png")
    await store.put("intermediates/sub/b_1.png", b"b", "image/png")
    await store.put("intermediates-not/c.png", b"c", "image/png")
    await store.put("images/d.png", b"d", "image/png")
    listed = dict(await store.list_modified("intermediates/"))
    assert set(listed) == {"intermediates/a_0.png", "intermediates/sub/b_1.png"}
    assert all(before <= when <= datetime.now(UTC) + timedelta(seconds=5) for when in listed.values())
    with pytest.raises(InvalidRequest):
        await store.list_modified("../")


async def test_s3_list_modified_strips_the_store_prefix(s3_endpoint: str, bucket: str) -> None:
    store = S3ObjectStore(bucket, "serve/app", endpoint_url=s3_endpoint, **CREDENTIALS)
    await store.put("intermediates/a.png", b"a", "image/png")
    assert [key for key, _ in await store.list_modified("intermediates")] == ["intermediates/a.png"]


async def test_unsafe_keys_are_rejected(store: FileObjectStore | S3ObjectStore) -> None:
    for key in TRAVERSAL_KEYS:
        with pytest.raises(InvalidRequest):
            await store.put(key, b"evil", "image/png")
        with pytest.raises(InvalidRequest):
            await store.get(key)
        with pytest.raises(InvalidRequest):
            await store.delete(["fine.png", key])
        if isinstance(store, S3ObjectStore):
            with pytest.raises(InvalidRequest):
                store.presigned_url(key)


async def test_file_store_writes_nothing_outside_root(tmp_path: Path) -> None:
    store = FileObjectStore(tmp_path / "outer" / "root")
    for key in TRAVERSAL_KEYS:
        with pytest.raises(InvalidRequest):
            await store.put(key, b"evil", "image/png")
    await store.put("ok/a.png", b"ok", "image/png")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [tmp_path / "outer" / "root" / "ok" / "a.png"]


async def test_file_store_rejects_symlink_escape(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    store = FileObjectStore(root)
    with pytest.raises(InvalidRequest):
        await store.put("link/a.png", b"evil", "image/png")
    assert list(outside.iterdir()) == []


async def test_file_store_put_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = FileObjectStore(tmp_path)
    await store.put("deep/er/a.png", b"x" * 1000, "image/png")
    assert [p.name for p in (tmp_path / "deep" / "er").iterdir()] == ["a.png"]
    assert store.presigned_url("deep/er/a.png") is None


async def test_s3_content_type_and_prefix(s3_endpoint: str, bucket: str, raw_s3) -> None:
    store = S3ObjectStore(bucket, "/serve/app/", endpoint_url=s3_endpoint, **CREDENTIALS)
    assert store.prefix == "serve/app"
    await store.put("images/a.png", b"png", "image/png")
    await store.put("thumbnails/a.webp", b"webp", "image/webp")
    assert _bucket_keys(raw_s3, bucket) == ["serve/app/images/a.png", "serve/app/thumbnails/a.webp"]
    assert raw_s3.head_object(Bucket=bucket, Key="serve/app/images/a.png")["ContentType"] == "image/png"
    assert raw_s3.head_object(Bucket=bucket, Key="serve/app/thumbnails/a.webp")["ContentType"] == "image/webp"
    await store.delete(["images/a.png"])
    assert _bucket_keys(raw_s3, bucket) == ["serve/app/thumbnails/a.webp"]


async def test_s3_without_prefix_uses_bare_keys(s3_endpoint: str, bucket: str, raw_s3) -> None:
    store = S3ObjectStore(bucket, endpoint_url=s3_endpoint, **CREDENTIALS)
    await store.put("images/a.png", b"png", "image/png")
    assert _bucket_keys(raw_s3, bucket) == ["images/a.png"]


async def test_s3_traversal_keys_write_nothing(s3_endpoint: str, bucket: str, raw_s3) -> None:
    store = S3ObjectStore(bucket, "p", endpoint_url=s3_endpoint, **CREDENTIALS)
    for key in TRAVERSAL_KEYS:
        with pytest.raises(InvalidRequest):
            await store.put(key, b"evil", "image/png")
    assert _bucket_keys(raw_s3, bucket) == []


async def test_s3_presigned_url_serves_the_bytes(s3_endpoint: str, bucket: str) -> None:
    store = S3ObjectStore(bucket, "pre", endpoint_url=s3_endpoint, **CREDENTIALS)
    await store.put("images/a.png", b"\x89PNG-bytes", "image/png")
    url = store.presigned_url("images/a.png", expires_s=60)
    assert url is not None
    assert url.startswith(f"{s3_endpoint}/{bucket}/pre/images/a.png?")
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == b"\x89PNG-bytes"
    assert response.headers["content-type"] == "image/png"


async def test_s3_delete_batches(s3_endpoint: str, bucket: str, raw_s3, monkeypatch: pytest.MonkeyPatch) -> None:
    store = S3ObjectStore(bucket, endpoint_url=s3_endpoint, **CREDENTIALS)
    keys = [f"k/{i}" for i in range(3)]
    for key in keys:
        await store.put(key, b"x", "application/octet-stream")
    batches: list[int] = []
    store._client.meta.events.register(
        "before-call.s3.DeleteObjects", lambda params, **_: batches.append(params["body"].count(b"<Key>"))
    )
    monkeypatch.setattr(objects, "MAX_DELETE_BATCH", 2)
    await store.delete(keys)
    assert batches == [2, 1]
    assert _bucket_keys(raw_s3, bucket) == []


def test_batched_chunks() -> None:
    keys = [str(i) for i in range(2501)]
    chunks = list(batched(keys, 1000))
    assert [len(chunk) for chunk in chunks] == [1000, 1000, 501]
    assert [key for chunk in chunks for key in chunk] == keys
    assert list(batched([], 1000)) == []


def test_make_object_store_file(tmp_path: Path) -> None:
    target = tmp_path / "with space"
    store = make_object_store(target.as_uri())
    assert isinstance(store, FileObjectStore)
    assert store.root == target.resolve()


def test_make_object_store_s3() -> None:
    store = make_object_store("s3://my-bucket/some/prefix/", endpoint_url="http://127.0.0.1:1", **CREDENTIALS)
    assert isinstance(store, S3ObjectStore)
    assert (store.bucket, store.prefix) == ("my-bucket", "some/prefix")
    bare = make_object_store("s3://my-bucket", **CREDENTIALS)
    assert isinstance(bare, S3ObjectStore)
    assert (bare.bucket, bare.prefix) == ("my-bucket", "")


@pytest.mark.parametrize(
    "url",
    ["http://example.com/x", "/plain/path", "", "file://relative/path", "s3:///no-bucket", "s3://b/a//c", "gs://b/p"],
)
def test_make_object_store_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ValueError, match="(?i)object store URL|prefix"):
        make_object_store(url, **CREDENTIALS)


async def test_s3_other_errors_are_not_image_not_found(s3_endpoint: str) -> None:
    store = S3ObjectStore("no-such-bucket-here", endpoint_url=s3_endpoint, **CREDENTIALS)
    with pytest.raises(ClientError) as info:
        await store.get("images/a.png")
    assert info.value.response["Error"]["Code"] == "NoSuchBucket"


async def test_s3_delete_reports_per_key_errors(s3_endpoint: str) -> None:
    store = S3ObjectStore("b", endpoint_url=s3_endpoint, **CREDENTIALS)
    with Stubber(store._client) as stub:
        stub.add_response(
            "delete_objects",
            {"Errors": [{"Key": "k", "Code": "AccessDenied", "Message": "Access Denied"}]},
            {"Bucket": "b", "Delete": {"Objects": [{"Key": "k"}], "Quiet": True}},
        )
        with pytest.raises(OSError, match="Access Denied"):
            await store.delete(["k"])
