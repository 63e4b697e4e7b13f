"""One exception hierarchy for the whole service; each API dialect maps it to HTTP once."""

from __future__ import annotations


class ServeAppError(Exception):
    """Something went wrong in serve-app."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self)

    def __reduce__(self) -> tuple[object, ...]:
        # Errors cross process boundaries (Ray handles); keep subclass fields, not just args.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[ServeAppError], args: tuple[object, ...], state: dict[str, object]) -> ServeAppError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class InvalidRequest(ServeAppError):
    """The request is invalid."""

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnsupportedMediaType(InvalidRequest):
    """The upload (an image, a model file) is not something this server can read."""


class PayloadTooLarge(InvalidRequest):
    """The upload has too many bytes."""


class Unauthorized(ServeAppError):
    """Invalid or no credentials supplied."""


class Forbidden(ServeAppError):
    """The caller may not do this (a path outside the allowed roots; later: another user's data)."""


class NotFound(ServeAppError):
    """The requested object does not exist."""


class JobNotFound(NotFound):
    """No such job."""


class ImageNotFound(NotFound):
    """No such image."""


class ModelNotFound(NotFound):
    """No such model."""

    def __init__(self, name: str) -> None:
        super().__init__(f"Unknown diffusion model {name}")
        self.name = name


class QueueFull(ServeAppError):
    """Too many requests."""

    def __init__(self, message: str | None = None, *, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Conflict(ServeAppError):
    """The object is in a state that does not allow this operation."""


class ServiceUnavailable(ServeAppError):
    """The service is not ready."""


class JobCanceled(ServeAppError):
    """The job was canceled."""


class ExecutorLost(ServeAppError):
    """The replica running the job was lost; the job will be retried."""


class GenerationFailed(ServeAppError):
    """The generation failed."""

    def __init__(self, message: str, *, error_type: str = "GenerationError", traceback: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.traceback = traceback
