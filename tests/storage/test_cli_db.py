"""`serve-app db upgrade` migrates the configured database to head."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from serve_app.storage.db import current_revision, head_revision
from tests.conftest import with_database

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_db_upgrade_command_migrates_an_empty_database(postgres_server, postgres_admin, tmp_path):
    name = f"cli_{uuid.uuid4().hex[:12]}"
    await postgres_admin.execute(f"CREATE DATABASE {name}")
    url = with_database(postgres_server, name)
    try:
        assert await current_revision(url) is None
        env = {**os.environ, "SERVE_APP_DATABASE_URL": url, "SERVE_APP_DATA_DIR": str(tmp_path)}
        result = subprocess.run(
            [sys.executable, "-m", "serve_app.cli", "db", "upgrade"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert await current_revision(url) == head_revision()
    finally:
        await postgres_admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
