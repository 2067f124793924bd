"""One error type that carries its HTTP status (and, through the gRPC front end, its gRPC status):
every ServiceError leaves the server as {"error": message} with that status, from one place, the
middleware. Anything else that escapes a request is a 500 answered there too."""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ServiceError):
    status_code = 400


class Unauthorized(ServiceError):
    status_code = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404


class PayloadTooLarge(ServiceError):
    status_code = 413


class UnsupportedMediaType(ServiceError):
    status_code = 415


class Unprocessable(ServiceError):
    status_code = 422


class InferenceFailed(ServiceError):
    """The model failed on an admitted request: the server's fault, not a reason to retry."""

    status_code = 500


class ServiceUnavailable(ServiceError):
    """Not ready, shutting down, or shedding load: the client may retry after `retry_after` seconds."""

    status_code = 503

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class ModelNotReady(ServiceUnavailable):
    pass


class Overloaded(ServiceUnavailable):
    pass


class ProviderError(RuntimeError):
    """The execution provider that was asked for cannot be had: the server refuses to start."""


class ModelLoadError(RuntimeError):
    """A model file that cannot be loaded or breaks the contract."""
