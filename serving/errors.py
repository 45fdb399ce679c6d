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


class Overloaded(GatewayError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "overloaded"


class BackendUnavailable(GatewayError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "unavailable"


class DeadlineExpired(GatewayError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "deadline_exceeded"


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str, str]:
    """(status code, message for the caller, metrics reason). Unknown errors stay generic:
    their details go to the log, never to the caller."""
    if isinstance(error, GatewayError):
        return error.code, str(error), error.reason
    return grpc.StatusCode.INTERNAL, "internal error (see the gateway log)", "internal"
