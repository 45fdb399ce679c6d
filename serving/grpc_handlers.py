"""Register a gRPC servicer so that an undecodable request body is the caller's error.

grpc.aio decodes a request before the servicer runs; a body that is not the method's message
would end as UNKNOWN with a traceback in the log. Here every method's deserializer catches the
decode error and hands the handler an `Undecodable` marker instead, which the handler answers
with INVALID_ARGUMENT and one short info log line. Every service of the gateway is registered
through `add_servicer`, so no RPC can forget it:

    add_servicer(server, servicer, pb2.DESCRIPTOR.services_by_name["AdminService"])

The servicer is an instance of the generated servicer base class (grpc.aio: its methods are
coroutines, or async generators for server streaming); the method names come from the
service descriptor.
"""

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass

log = logging.getLogger("logitrec.access")


@dataclass(frozen=True)
class Undecodable:
    """What the handler receives instead of a request whose bytes are not its message."""

    message_type: str  # the expected message's full name
    size: int  # bytes received

    @property
    def problem(self) -> str:
        return f"not a valid {self.message_type} message ({self.size} bytes)"

    @property
    def message(self) -> str:
        return f"request: {self.problem}"


# What a servicer may do with an undecodable request instead of the default (log, then abort):
# called with the method name, the marker and the call's context; it must abort the call.
OnUndecodable = Callable[[str, Undecodable, grpc.aio.ServicerContext], Awaitable[None]]


def _deserializer(message_class) -> Callable[[bytes], object]:
    name = message_class.DESCRIPTOR.full_name

    def deserialize(data: bytes):
        try:
            return message_class.FromString(data)
        except DecodeError:
            return Undecodable(name, len(data))

    return deserialize


async def refuse(method: str, request: Undecodable, context: grpc.aio.ServicerContext) -> None:
    """The default answer to an undecodable request: one info line, INVALID_ARGUMENT."""
    log.info(
        "%s %s",
        method,
        "INVALID_ARGUMENT",
        extra={"method": method, "status": "INVALID_ARGUMENT", "reason": "undecodable"},
    )
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)


def _guard_unary(behavior, method: str, on_undecodable: OnUndecodable):
    if inspect.isasyncgenfunction(behavior):  # server streaming written as an async generator

        async def stream(request, context):
            if isinstance(request, Undecodable):
                await on_undecodable(method, request, context)
                return
            async for response in behavior(request, context):
                yield response

        return stream

    async def unary(request, context):
        if isinstance(request, Undecodable):
            return await on_undecodable(method, request, context)
        return await behavior(request, context)

    return unary


def _guard_stream(behavior, method: str, on_undecodable: OnUndecodable):
    """Client streaming: the first undecodable message of the stream ends the call."""

    def checked(requests: AsyncIterator, context) -> AsyncIterator:
        async def iterate():
            async for request in requests:
                if isinstance(request, Undecodable):
                    await on_undecodable(method, request, context)
                yield request

        return iterate()

    if inspect.isasyncgenfunction(behavior):

        async def stream(requests, context):
            async for response in behavior(checked(requests, context), context):
                yield response

        return stream

    async def unary(requests, context):
        return await behavior(checked(requests, context), context)

    return unary


# (client streaming, server streaming) -> the gRPC handler factory of that kind of method.
HANDLER_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _handler(servicer, method: MethodDescriptor, on_undecodable: OnUndecodable):
    behavior = getattr(servicer, method.name)
    guard = _guard_stream if method.client_streaming else _guard_unary
    factory = HANDLER_FACTORIES[(method.client_streaming, method.server_streaming)]
    return factory(
        guard(behavior, method.name, on_undecodable),
        request_deserializer=_deserializer(GetMessageClass(method.input_type)),
        response_serializer=GetMessageClass(method.output_type).SerializeToString,
    )


def add_servicer(
    server: grpc.aio.Server,
    servicer,
    service: ServiceDescriptor,
    *,
    on_undecodable: OnUndecodable | None = None,
) -> None:
    """Serve every method of `service` from `servicer` on `server`, undecodable bodies included
    (answered by `on_undecodable`, by default `refuse`)."""
    handlers = {
        method.name: _handler(servicer, method, on_undecodable or refuse)
        for method in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)
