"""Object storage adapters: a local folder or an S3 bucket, behind the `ObjectStore` port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from serve_app.domain.errors import ImageNotFound, InvalidRequest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# S3 refuses more keys than this in one DeleteObjects call.
MAX_DELETE_BATCH = 1000

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative POSIX path; raise InvalidRequest otherwise."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidRequest(f"Invalid object key {key!r}", field="key")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidRequest(f"Invalid object key {key!r}", field="key")
    return key


def batched(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    """Consecutive slices of at most `size` items (itertools.batched is 3.12+)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class FileObjectStore:
    """Objects as files under a root folder; for single-host deployments and tests."""

    def __init__(self, root: Path) -> None:
        self._root = root.resolve()

    @property
    def root(self) -> Path:
        return self._root

    def _path(self, key: str) -> Path:
        path = self._root / validate_key(key)
        # A symlink inside the root could still point elsewhere.
        if not path.resolve().is_relative_to(self._root):
            raise InvalidRequest(f"Invalid object key {key!r}", field="key")
        return path

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._write, self._path(key), data)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ImageNotFound(f"No object {key!r}") from None

    async def delete(self, keys: Sequence[str]) -> None:
        paths = [self._path(key) for key in keys]
        await asyncio.to_thread(self._unlink_all, paths)

    def presigned_url(self, key: str, expires_s: int = 3600) -> str | None:
        return None

    async def list_modified(self, folder: str) -> list[tuple[str, datetime]]:
        """Every object under `folder` (a key prefix ending in a folder name) and when it was last written."""
        return await asyncio.to_thread(self._walk, self._path(folder.rstrip("/")))

    def _walk(self, folder: Path) -> list[tuple[str, datetime]]:
        found = []
        for directory, _, files in os.walk(folder):
            for name in files:
                path = Path(directory) / name
                with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                    modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                    found.append((path.relative_to(self._root).as_posix(), modified))
        return found

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A temp file in the same folder makes os.replace atomic: readers see old or new, never half.
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise

    @staticmethod
    def _unlink_all(paths: Sequence[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)


class S3ObjectStore:
    """Objects in an S3 (or S3-compatible) bucket, optionally under a key prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("S3 bucket name is empty")
        prefix = prefix.strip("/")
        if prefix:
            try:
                validate_key(prefix)
            except InvalidRequest as exc:
                raise ValueError(f"Invalid S3 prefix {prefix!r}") from exc
        self._bucket = bucket
        self._prefix = prefix
        self._client = _make_client(endpoint_url, region, access_key_id, secret_access_key)

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def prefix(self) -> str:
        return self._prefix

    def _key(self, key: str) -> str:
        validate_key(key)
        return f"{self._prefix}/{key}" if self._prefix else key

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        full_key = self._key(key)
        await asyncio.to_thread(
            self._client.put_object, Bucket=self._bucket, Key=full_key, Body=data, ContentType=content_type
        )

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._read, self._key(key))

    async def delete(self, keys: Sequence[str]) -> None:
        # Deduplicated, order kept: a batch naming a key twice is wasted work.
        full_keys = list(dict.fromkeys(self._key(key) for key in keys))
        for batch in batched(full_keys, MAX_DELETE_BATCH):
            await asyncio.to_thread(self._delete_batch, batch)

    def presigned_url(self, key: str, expires_s: int = 3600) -> str | None:
        return self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self._bucket, "Key": self._key(key)}, ExpiresIn=expires_s
        )

    async def list_modified(self, folder: str) -> list[tuple[str, datetime]]:
        """Every object under `folder` (a key prefix ending in a folder name) and when it was last written."""
        return await asyncio.to_thread(self._list, self._key(folder.rstrip("/")) + "/")

    def _list(self, full_prefix: str) -> list[tuple[str, datetime]]:
        skip = len(self._prefix) + 1 if self._prefix else 0
        found = []
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=full_prefix):
            for item in page.get("Contents", []):
                found.append((item["Key"][skip:], item["LastModified"].astimezone(UTC)))
        return found

    def _read(self, full_key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=full_key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING_CODES:
                raise ImageNotFound(f"No object {full_key!r}") from None
            raise
        with contextlib.closing(response["Body"]) as body:
            return body.read()

    def _delete_batch(self, full_keys: Sequence[str]) -> None:
        response = self._client.delete_objects(
            Bucket=self._bucket, Delete={"Objects": [{"Key": key} for key in full_keys], "Quiet": True}
        )
        # DeleteObjects answers 200 even when single keys fail; missing keys are not errors.
        errors = response.get("Errors", [])
        if errors:
            first = errors[0]
            raise OSError(f"S3 delete failed for {len(errors)} keys, e.g. {first.get('Key')}: {first.get('Message')}")


def _make_client(
    endpoint_url: str | None, region: str | None, access_key_id: str | None, secret_access_key: str | None
) -> S3Client:
    config = Config(
        signature_version="s3v4",
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=32,
        # Custom endpoints (MinIO, moto, R2...) often lack virtual-host DNS and the newer default checksums.
        s3={"addressing_style": "path"} if endpoint_url else None,
        request_checksum_calculation="when_required" if endpoint_url else "when_supported",
        response_checksum_validation="when_required" if endpoint_url else "when_supported",
    )
    # A private session: boto3's default session is not thread-safe; the client itself is.
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=config,
    )


def make_object_store(
    url: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> FileObjectStore | S3ObjectStore:
    """Build a store from `file:///absolute/path` or `s3://bucket/optional/prefix`."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise ValueError(f"Object store URL {url!r} must be file:///absolute/path")
        return FileObjectStore(Path(path))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"Object store URL {url!r} has no bucket: expected s3://bucket/optional/prefix")
        return S3ObjectStore(
            parts.netloc,
            unquote(parts.path),
            endpoint_url=endpoint_url,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
        )
    raise ValueError(f"Unsupported object store URL {url!r}: expected file:///absolute/path or s3://bucket/prefix")
