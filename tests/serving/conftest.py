"""A real stack for serving tests: `serve-app run` as a subprocess, exactly as `make run` starts it.

It gets its own data dir and HTTP port, and a fresh database on the session's Postgres so tests
can inspect rows directly. Everything it starts is stopped through its PID (SIGTERM), never by name.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import pytest_asyncio

from tests.conftest import with_database

STARTUP_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningStack:
    """A `serve-app run` process and how to reach it."""

    process: subprocess.Popen[bytes]
    url: str
    database_url: str
    data_dir: Path
    log_path: Path
    descendants: list[psutil.Process] = field(default_factory=list)

    def processes(self) -> list[psutil.Process]:
        """The launcher and everything it started (Ray, replicas, Postgres helpers)."""
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def replica_processes(self, deployment: str) -> list[psutil.Process]:
        found = []
        for proc in self.processes():
            try:
                title = " ".join(proc.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if f"ServeReplica:serve-app:{deployment}" in title:
                found.append(proc)
        return found

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def wait_until_ready(stack: RunningStack) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if stack.process.poll() is not None:
            raise RuntimeError(f"serve-app run exited early:\n{stack.log()}")
        try:
            if httpx.get(f"{stack.url}/api", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)  # waiting for an external process to come up, polled with a deadline
    raise RuntimeError(f"serve-app did not become ready:\n{stack.log()}")


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def serving_database(postgres_server: str, postgres_admin: Any, postgres_template: str) -> str:
    name = f"serving_{uuid.uuid4().hex[:12]}"
    await postgres_admin.execute(f"CREATE DATABASE {name} TEMPLATE {postgres_template}")
    return with_database(postgres_server, name)


@pytest.fixture(scope="session")
def stack(serving_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    data_dir = tmp_path_factory.mktemp("serving-data")
    port = free_port()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "SERVE_APP_DATABASE_URL": serving_database,
        "SERVE_APP_MAX_STEPS": "200",
        # Short leases so a lost Queue replica's jobs come back within seconds in the tests.
        "SERVE_APP_LEASE_SECONDS": "5",
        "SERVE_APP_RAY_LOG_TO_DRIVER": "0",
        # Local model installs may read this folder besides the models folder.
        "SERVE_APP_MODEL_IMPORT_ROOTS": json.dumps([str(data_dir / "imports")]),
    }
    log_path = data_dir / "serve-app.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "serve_app.cli", "run", "--port", str(port), "--data-dir", str(data_dir)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our own process group: a Ctrl-C in the terminal doesn't reach it
        )
    running = RunningStack(
        process=process,
        url=f"http://127.0.0.1:{port}",
        database_url=serving_database,
        data_dir=data_dir,
        log_path=log_path,
    )
    try:
        wait_until_ready(running)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
