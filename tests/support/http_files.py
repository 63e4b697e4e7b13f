"""A real HTTP file server on 127.0.0.1 for download tests, with Range support and failure injection.

    with FileServer() as server:
        url = server.add("/m/lora.safetensors", data)       # or add_file(path, route)
        server.drop_after("/m/lora.safetensors", 1000)      # the next GET sends 1000 bytes, then hangs up
        gate = server.hold("/m/lora.safetensors", after=10) # GETs send 10 bytes, then wait for gate.set()

Every request is recorded (path, Range, Authorization) so tests can assert what the client asked for. The
server never sleeps: a held response waits on a threading.Event the test sets.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

_RANGE = re.compile(r"^bytes=(\d+)-$")
# A held response waits at most this long, so a test that forgets to open the gate still ends.
HOLD_LIMIT_S = 30.0


@dataclass
class Served:
    data: bytes
    content_type: str = "application/octet-stream"
    disposition: str | None = None
    send_length: bool = True
    ranges: bool = True
    status: int = 200
    redirect_to: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    auth: str | None = None  # the Authorization header required (else 401)


@dataclass
class Seen:
    path: str
    range: str | None
    authorization: str | None


@dataclass
class _State:
    files: dict[str, Served] = field(default_factory=dict)
    drops: dict[str, list[int]] = field(default_factory=dict)  # path -> bytes sent before hanging up, per GET
    holds: dict[str, tuple[int, threading.Event]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # silence the default stderr log
        return

    def do_GET(self) -> None:  # the http.server naming
        state = self.server.state
        path = self.path.split("?", 1)[0]
        with state.lock:
            state.seen.append(Seen(path, self.headers.get("Range"), self.headers.get("Authorization")))
            served = state.files.get(path)
            pending = state.drops.get(path)
            drop = pending.pop(0) if pending else None
            hold = state.holds.get(path)
        if served is None:
            self._plain(404, b"not found")
            return
        if served.redirect_to is not None:
            self.send_response(302)
            self.send_header("Location", served.redirect_to)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            return
        if served.auth is not None and self.headers.get("Authorization") != served.auth:
            self._plain(401, b"unauthorized", served.headers)
            return
        if served.status != 200:
            self._plain(served.status, b"refused", served.headers)
            return
        self._send_file(served, drop, hold)

    def _send_file(self, served: Served, drop: int | None, hold: tuple[int, threading.Event] | None) -> None:
        data, start = served.data, 0
        match = _RANGE.match(self.headers.get("Range") or "")
        if match and served.ranges:
            start = int(match[1])
            if start >= len(data):
                self._plain(416, b"")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", served.content_type)
        for name, value in served.headers.items():
            self.send_header(name, value)
        if served.disposition:
            self.send_header("Content-Disposition", served.disposition)
        if served.send_length:
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            if drop is not None:
                self.wfile.write(body[:drop])
                self.wfile.flush()
                return  # hang up with the rest unsent: the client sees a short body
            if hold is not None:
                after, gate = hold
                self.wfile.write(body[:after])
                self.wfile.flush()
                gate.wait(HOLD_LIMIT_S)
                body = body[after:]
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a cancelled download)
        finally:
            self.close_connection = True

    def _plain(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: _State) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class FileServer:
    """Serves registered bytes over real HTTP on an ephemeral port, in a background thread."""

    def __init__(self) -> None:
        self.state = _State()
        self._server = _Server(self.state)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="file-server", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, route: str) -> str:
        return self.base_url + route

    def add(self, route: str, data: bytes, **options: object) -> str:
        """Serve `data` at `route`; options are Served fields (disposition, send_length, ranges, status, headers,
        auth, content_type)."""
        with self.state.lock:
            self.state.files[route] = Served(data=data, **options)  # type: ignore[arg-type]
        return self.url(route)

    def add_file(self, path: Path, route: str | None = None, **options: object) -> str:
        return self.add(route or f"/files/{path.name}", path.read_bytes(), **options)

    def add_hf_repo(self, repo_id: str, files: dict[str, bytes]) -> str:
        """Serve a Hugging Face model repo the way the hub's API does (for `HfHubClient(endpoint=base_url)`):
        its listing at /api/models/<repo> (LFS sha256 for weights) and each file at /<repo>/resolve/main/<path>.
        Returns the endpoint."""
        siblings: list[dict[str, object]] = []
        for path, data in files.items():
            sibling: dict[str, object] = {"rfilename": path, "size": len(data)}
            if path.endswith((".safetensors", ".bin", ".ckpt", ".pt", ".pth")):
                lfs = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                sibling["lfs"] = lfs
            siblings.append(sibling)
            self.add(f"/{repo_id}/resolve/main/{path}", data)
        listing = json.dumps({"id": repo_id, "sha": "0" * 40, "siblings": siblings}).encode()
        self.add(f"/api/models/{repo_id}", listing, content_type="application/json")
        return self.base_url

    def redirect(self, route: str, to_route: str) -> str:
        with self.state.lock:
            self.state.files[route] = Served(data=b"", redirect_to=self.url(to_route))
        return self.url(route)

    def drop_after(self, route: str, sent_bytes: int, *, times: int = 1) -> None:
        """The next `times` GETs of `route` send `sent_bytes` of their body, then close the connection."""
        with self.state.lock:
            self.state.drops[route] = [sent_bytes] * times

    def hold(self, route: str, *, after: int = 0) -> threading.Event:
        """GETs of `route` send `after` bytes, then wait until the returned event is set."""
        gate = threading.Event()
        with self.state.lock:
            self.state.holds[route] = (after, gate)
        return gate

    def requests(self, route: str | None = None) -> list[Seen]:
        with self.state.lock:
            return [seen for seen in self.state.seen if route is None or seen.path == route]

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self.state.lock:
            gates = [gate for _, gate in self.state.holds.values()]
        for gate in gates:
            gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
