"""The gateway's errors and their gRPC status codes: mapped here and nowhere else."""

import grpc


class GatewayError(Exception):
    code = grpc.StatusCode.INTERNAL
    reason = "internal"


class InvalidRequest(GatewayError):
    """The request is wrong; the message names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid_argument"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


class ModelNotFound(GatewayError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "not_found"


class PreconditionFailed(GatewayError):
    """The request is well formed but cannot be done in the gateway's state (a model version
    that is incomplete or invalid, or unloading the default model's only version)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "failed_precondition"


class Overloaded(GatewayError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "overloaded"


class BackendUnavailable(GatewayError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "unavailable"


class BackendTimeout(BackendUnavailable):
    """A backend call ran past its timeout. The engine turns it into DeadlineExpired when the
    request's deadline set that timeout; left as is, the backend is stuck: retry elsewhere."""

    reason = "backend_timeout"


class BackendRejected(GatewayError):
    """The backend refused inputs the gateway built (shapes, types, model config): a gateway or
    deployment bug, not the caller's, so INTERNAL and never retried as UNAVAILABLE."""

    reason = "backend_rejected"


class ShuttingDown(GatewayError):
    """The gateway is draining and takes no new requests: retry on another replica."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "shutting_down"


class DeadlineExpired(GatewayError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "deadline_exceeded"


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str, str]:
    """(status code, message for the caller, metrics reason). Unknown errors stay generic:
    their details go to the log, never to the caller."""
    if isinstance(error, GatewayError):
        return error.code, bounded(str(error)), error.reason
    return grpc.StatusCode.INTERNAL, "internal error (see the gateway log)", "internal"


QUOTED_CHARS = 64  # of any caller's value in a message: enough to recognise it
MESSAGE_BYTES = 1024  # a status message travels in trailing metadata (16 KiB in all)


def quote(value: object, limit: int = QUOTED_CHARS) -> str:
    """`value` for a message: repr of its first `limit` characters, then "..." if longer."""
    text = str(value)
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}..."


def bounded(message: str, limit: int = MESSAGE_BYTES) -> str:
    """`message` cut to at most `limit` UTF-8 bytes (and "..."), never mid-character."""
    data = message.encode(errors="replace")
    if len(data) <= limit:
        return message
    return data[: limit - 3].decode(errors="ignore") + "..."
