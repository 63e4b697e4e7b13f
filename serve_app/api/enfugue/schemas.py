"""Enfugue wire models and their translation to and from the domain."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.domain.generation import GenerationRequest
from serve_app.domain.jobs import Job, JobStatus

# Parameters Enfugue accepts that this server does not run yet. Ignoring them silently would
# return a plain txt2img image for an img2img request, so they are refused with 501 instead.
UNSUPPORTED_KEYS = (
    "image", "mask", "control_image", "nodes", "upscale", "refiner", "inpainter", "lora", "lycoris",
    "inversion", "vae", "controlnet", "remove_background",
)  # fmt: skip

CANCELED_MESSAGE = "The invocation was canceled."


class InvokeBody(BaseModel):
    """`POST /api/invoke`. Unknown keys are ignored, as Enfugue does; types are checked (Enfugue did not)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    model_type: Literal["checkpoint", "model"] | None = None
    prompt: str | None = None
    prompt_2: str | None = None
    negative_prompt: str | None = None
    negative_prompt_2: str | None = None
    size: int | None = Field(default=None, gt=0)
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    samples: int = Field(default=1, ge=1)
    iterations: int = Field(default=1, ge=1)
    num_inference_steps: int = 40
    guidance_scale: float = 7.5
    scheduler: str | None = None
    intermediates: bool | None = None
    state: Any = None

    def resolved_model_type(self) -> str:
        """Enfugue infers `checkpoint` from a file extension in the name (enfugue-api.md §5.1)."""
        if self.model_type:
            return self.model_type
        name = (self.model or "").lower()
        return "checkpoint" if ".ckpt" in name or ".safetensors" in name else "model"

    def to_domain(self) -> GenerationRequest:
        values: dict[str, Any] = {
            "model": self.model,
            "prompt": self.prompt or "",
            "negative_prompt": self.negative_prompt or "",
            "prompt_2": self.prompt_2,
            "negative_prompt_2": self.negative_prompt_2,
            "width": self.size if self.width is None else self.width,
            "height": self.size if self.height is None else self.height,
            "steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "num_images": self.samples * self.iterations,
            "scheduler": self.scheduler or None,
        }
        if self.seed is not None:
            values["seed"] = self.seed
        return GenerationRequest(**values)


def image_entries(job: Job) -> list[str]:
    """Enfugue's `images` entries: parent directory plus file name, fetched as /api/invocation/{entry}."""
    return [f"images/{name}" for name in job.image_names]


def invocation_status(job: Job, *, now: datetime | None = None) -> dict[str, Any]:
    """The status object of enfugue-api.md §7.1, with exactly its fields per state."""
    uid = job.id.hex
    if job.status is JobStatus.PENDING:
        return {"status": "queued", "uuid": uid}
    if job.status is JobStatus.FAILED:
        return {"status": "error", "uuid": uid, "message": job.error.message if job.error else "Failed."}
    if job.status is JobStatus.CANCELED:
        return {"status": "error", "uuid": uid, "message": CANCELED_MESSAGE}
    completed = job.status is JobStatus.COMPLETED
    started = job.started_at or job.created_at
    end = job.completed_at if completed and job.completed_at else (now or datetime.now(UTC))
    duration = max((end - started).total_seconds(), 0.0)
    step, total = job.progress_step, job.progress_total
    if completed and total is not None:
        step = total
    return {
        "id": job.item_id,
        "uuid": uid,
        "status": "completed" if completed else "processing",
        "progress": (step / total) if step is not None and total else None,
        "step": step,
        "total": total,
        "duration": duration,
        "images": image_entries(job) if completed else None,
        "rate": (step / duration) if step and duration > 0 else None,
        "task": None,
    }
