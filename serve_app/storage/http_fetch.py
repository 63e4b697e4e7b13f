"""HttpFetcher: streaming HTTP(S) GETs for DownloadService (httpx), with Range resume and bearer tokens.

Transport failures become ConnectionError / TimeoutError (the service resumes those); 5xx answers count as
transport failures too (a busy CDN). Other error statuses raise HttpStatusError, which is final.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import Message

import httpx

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class HttpStatusError(Exception):
    """The server refused the download (4xx)."""


class HttpServerError(ConnectionError):
    """The server failed (5xx); worth another try."""


@dataclass(frozen=True)
class HttpResponse:
    """One streaming response, as services.downloads.FetchResponse describes it."""

    partial: bool
    total_bytes: int | None
    content_type: str | None
    filename: str | None
    response: httpx.Response

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            # Raw bytes as they arrive (`Accept-Encoding: identity` was asked for; a model file is never decoded).
            async for chunk in self.response.aiter_raw():
                yield chunk
        except httpx.TimeoutException as exc:
            raise TimeoutError(f"Timed out reading {self.response.url}: {exc}") from exc
        except httpx.TransportError as exc:
            raise ConnectionError(f"Connection to {self.response.url.host} broke off: {exc}") from exc


def filename_from(disposition: str | None) -> str | None:
    """The file name of a Content-Disposition header (RFC 6266 / 2231 `filename*` included), unsanitised."""
    if not disposition:
        return None
    message = Message()
    message["content-disposition"] = disposition
    return message.get_filename()


def _total_and_start(response: httpx.Response) -> tuple[int | None, int]:
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
        if match is None:
            raise HttpStatusError(f"Unreadable Content-Range from {response.url}")
        total = None if match[3] == "*" else int(match[3])
        return total, int(match[1])
    length = response.headers.get("content-length")
    return (int(length) if length and length.isdigit() else None), 0


class HttpFetcher:
    """Implements services.downloads.Fetcher on one shared httpx.AsyncClient (redirects followed; httpx drops
    the Authorization header when a redirect leaves the origin, e.g. Hugging Face to its CDN)."""

    def __init__(self, client: httpx.AsyncClient | None = None, *, timeout_s: float = 60.0) -> None:
        self._client = client or httpx.AsyncClient(
            follow_redirects=True, timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 15.0))
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    @asynccontextmanager
    async def open(self, url: str, *, offset: int = 0, access_token: str | None = None) -> AsyncIterator[HttpResponse]:
        """GET `url` from byte `offset` on (see services.downloads.Fetcher.open)."""
        response = await self._send(url, offset, access_token)
        try:
            if response.status_code == 416 and offset > 0:
                # The part is already as long as the file (or longer): start over rather than guess.
                await response.aclose()
                offset = 0
                response = await self._send(url, 0, access_token)
            if response.status_code >= 500:
                raise HttpServerError(f"HTTP {response.status_code} {response.reason_phrase} for {url}")
            if response.status_code >= 400:
                raise HttpStatusError(f"HTTP {response.status_code} {response.reason_phrase} for {url}")
            total, start = _total_and_start(response)
            if response.status_code == 206 and start != offset:
                raise HttpStatusError(f"{url} answered bytes from {start}, not {offset}")
            yield HttpResponse(
                partial=response.status_code == 206 and offset > 0,
                total_bytes=total,
                content_type=response.headers.get("content-type"),
                filename=filename_from(response.headers.get("content-disposition")),
                response=response,
            )
        finally:
            await response.aclose()

    async def _send(self, url: str, offset: int, access_token: str | None) -> httpx.Response:
        headers = {"Accept-Encoding": "identity"}
        if offset > 0:
            headers["Range"] = f"bytes={offset}-"
        if access_token:
            headers["Authorization"] = f"Bearer {access_token}"
        try:
            return await self._client.send(self._client.build_request("GET", url, headers=headers), stream=True)
        except httpx.TimeoutException as exc:
            raise TimeoutError(f"Timed out connecting to {url}: {exc}") from exc
        except httpx.TransportError as exc:
            raise ConnectionError(f"Cannot reach {url}: {exc}") from exc
