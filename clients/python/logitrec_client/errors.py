"""One exception hierarchy for every failed call, and the one table that maps gRPC codes to it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc


class LogitRecError(Exception):
    """A call to the gateway failed.

    `code` is the gRPC status code and `details` the server's own message (for INVALID_ARGUMENT
    it names the offending field). Catch this to handle every failure; catch a subclass to handle
    one kind.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    def __reduce__(self) -> tuple[type[LogitRecError], tuple[grpc.StatusCode, str]]:
        # Rebuilt from (code, details), so errors survive pickling (e.g. multiprocessing).
        return type(self), (self.code, self.details)


class InvalidRequest(LogitRecError):
    """The gateway rejected the request (INVALID_ARGUMENT); sending it again cannot help."""


class NotFound(LogitRecError):
    """The model or model version asked for is not loaded (NOT_FOUND)."""


class Overloaded(LogitRecError):
    """The gateway's queue was full (RESOURCE_EXHAUSTED), even after the client's retries."""


class Unavailable(LogitRecError):
    """The gateway or its backend could not be reached (UNAVAILABLE), even after retries."""


class DeadlineExceeded(LogitRecError):
    """No answer arrived before the call's deadline (DEADLINE_EXCEEDED)."""


class Unauthenticated(LogitRecError):
    """The gateway wants a valid bearer token (UNAUTHENTICATED): none was sent, or it is wrong
    or revoked."""


class PermissionDenied(LogitRecError):
    """The token is valid but its role may not make this call (PERMISSION_DENIED)."""


_ERROR_BY_CODE: dict[grpc.StatusCode, type[LogitRecError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}


def error_from_rpc(error: grpc.RpcError) -> LogitRecError:
    """The LogitRecError for a failed gRPC call (sync or asyncio)."""
    # A grpc.RpcError raised by a call is also a grpc.Call (or aio.AioRpcError) with code() and
    # details(); a bare RpcError without them is an internal gRPC failure.
    code_of = getattr(error, "code", None)
    details_of = getattr(error, "details", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    details = (details_of() if callable(details_of) else None) or str(error)
    # gRPC also reports a message over the size limit as RESOURCE_EXHAUSTED: that is not an
    # overloaded gateway, and backing off would not help.
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        return LogitRecError(code, details)
    return _ERROR_BY_CODE.get(code, LogitRecError)(code, details)


@contextmanager
def rpc_errors_as_logitrec_errors() -> Iterator[None]:
    """Re-raise any grpc.RpcError inside the block as its LogitRecError (works around `await`)."""
    try:
        yield
    except grpc.RpcError as error:
        raise error_from_rpc(error) from error
