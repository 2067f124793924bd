"""ServiceError -> gRPC status, in one place: the code from the error's HTTP status (a full queue
apart: RESOURCE_EXHAUSTED, not UNAVAILABLE), the message as HTTP sends it in {"error": ...}, and
the error's headers (Retry-After, WWW-Authenticate) as trailing metadata."""

from __future__ import annotations

import grpc

from service.errors import Overloaded, ServiceError

CODES_BY_HTTP_STATUS: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class DeadlineExceeded(ServiceError):
    """The caller's gRPC deadline passed before the answer was ready; the queued work was dropped."""

    status_code = 504


def code_of(error: ServiceError) -> grpc.StatusCode:
    if isinstance(error, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return CODES_BY_HTTP_STATUS.get(error.status_code, grpc.StatusCode.INTERNAL)


def trailing_metadata(error: ServiceError) -> tuple[tuple[str, str], ...]:
    return tuple((key.lower(), value) for key, value in error.headers.items())
