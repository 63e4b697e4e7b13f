"""`serve-app run | generate | db upgrade | models demo`: the command line."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

app = typer.Typer(help="serve-app: image generation speaking the InvokeAI and Enfugue APIs.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
models_app = typer.Typer(help="Model maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
console = Console(stderr=True)


class _Stop(Exception):
    """Raised in the main thread by SIGTERM so every context manager unwinds."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


@app.command()
def run(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default 8000).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Database, files and models live here.")] = None,
) -> None:
    """Start the whole stack in the foreground; Ctrl-C or SIGTERM stops all of it."""
    # Before Ray is imported (it reads these at import): keep the local cluster on loopback.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from serve_app.serving.launcher import local_stack
    from serve_app.settings import Settings, get_settings

    overrides: dict[str, Any] = {
        key: value for key, value in {"host": host, "port": port, "data_dir": data_dir}.items() if value is not None
    }
    settings: Settings = get_settings().model_copy(update=overrides)
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        with local_stack(settings) as stack:
            console.print(f"[green]serve-app ready[/green] on {stack.url}  (API docs: {stack.url}/docs)")
            threading.Event().wait()
    except (KeyboardInterrupt, _Stop):
        console.print("serve-app stopped")


@app.command()
def generate(
    prompt: str,
    out: Annotated[Path, typer.Option(help="Where to write the PNG (several images: name_1.png, ...).")],
    server: Annotated[str, typer.Option(help="Base URL of a serve-app (or Enfugue) server.")] = "http://127.0.0.1:8000",
    model: Annotated[str | None, typer.Option(help="Model name (default: the server's default).")] = None,
    negative_prompt: Annotated[str | None, typer.Option()] = None,
    width: Annotated[int | None, typer.Option()] = None,
    height: Annotated[int | None, typer.Option()] = None,
    steps: Annotated[int | None, typer.Option()] = None,
    guidance_scale: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    samples: Annotated[int, typer.Option()] = 1,
    scheduler: Annotated[str | None, typer.Option()] = None,
    poll_interval: Annotated[float, typer.Option(help="Seconds between status polls.")] = 0.25,
) -> None:
    """Generate an image through the Enfugue API, with a progress bar fed by the status endpoint."""
    body = {
        "prompt": prompt,
        "model": model,
        "negative_prompt": negative_prompt,
        "width": width,
        "height": height,
        "num_inference_steps": steps,
        "guidance_scale": guidance_scale,
        "seed": seed,
        "samples": samples,
        "scheduler": scheduler,
    }
    with httpx.Client(base_url=server, timeout=60) as client:
        status = _check(client.post("/api/invoke", json={k: v for k, v in body.items() if v is not None}))
        status = _follow(client, status["uuid"], poll_interval)
        if status["status"] != "completed":
            console.print(f"[red]generation failed:[/red] {status.get('message', status['status'])}")
            raise typer.Exit(1)
        paths = _output_paths(out, len(status["images"]))
        for entry, path in zip(status["images"], paths, strict=True):
            response = client.get(f"/api/invocation/{entry}")
            response.raise_for_status()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(response.content)
            console.print(f"wrote {path}")


def _follow(client: httpx.Client, uid: str, poll_interval: float) -> dict[str, Any]:
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("queued", total=None)
        while True:
            status = _check(client.get(f"/api/invocation/{uid}"))
            if status["status"] in ("completed", "error"):
                return status
            if status["status"] == "processing" and status.get("total"):
                bar.update(task, description="generating", total=status["total"], completed=status.get("step") or 0)
            time.sleep(poll_interval)  # polling a remote server, not synchronisation


def _check(response: httpx.Response) -> dict[str, Any]:
    payload = response.json()
    if response.is_error:
        detail = "; ".join(error.get("detail", "") for error in payload.get("errors", [])) or response.text
        console.print(f"[red]{response.status_code}:[/red] {detail}")
        raise typer.Exit(1)
    data = payload["data"]
    assert isinstance(data, dict)
    return data


def _output_paths(out: Path, count: int) -> list[Path]:
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{index}{out.suffix}") for index in range(1, count + 1)]


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every Alembic migration to the configured (or embedded) database."""
    from serve_app.serving.launcher import embedded_or_external_database
    from serve_app.settings import get_settings
    from serve_app.storage.db import upgrade

    with embedded_or_external_database(get_settings()) as url:
        upgrade(url)
    console.print("database is up to date")


@models_app.command("demo")
def models_demo() -> None:
    """Build the tiny random-weight demo models into the models dir (no download)."""
    from serve_app.serving.launcher import ensure_demo_models
    from serve_app.settings import get_settings

    ensure_demo_models(get_settings().resolved_models_dir())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
