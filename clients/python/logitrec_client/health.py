"""The standard grpc.health.v1 Check call, without depending on grpcio-health-checking.

The client may depend only on grpcio and protobuf. Rather than hand-encode the wire format, the two
tiny messages are declared here with protobuf's descriptor API, so protobuf does the encoding and
skips unknown fields as usual. They live in a private descriptor pool: grpcio-health-checking,
if a process also imports it, registers the same names in the default pool, and the two must
not collide.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from logitrec_client.results import HealthStatus

CHECK_METHOD = "/grpc.health.v1.Health/Check"
_PACKAGE = "grpc.health.v1"


def _declare_messages() -> tuple[Any, Any]:
    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="logitrec_client/health_check.proto", package=_PACKAGE, syntax="proto3"
    )
    request = file.message_type.add(name="HealthCheckRequest")
    request.field.add(name="service", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    response = file.message_type.add(name="HealthCheckResponse")
    status_enum = response.enum_type.add(name="ServingStatus")
    for status in HealthStatus:
        status_enum.value.add(name=status.name, number=status.value)
    response.field.add(
        name="status",
        number=1,
        type=field.TYPE_ENUM,
        type_name=f".{_PACKAGE}.HealthCheckResponse.ServingStatus",
        label=field.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in ("HealthCheckRequest", "HealthCheckResponse")
    )  # type: ignore[return-value]


HealthCheckRequest, HealthCheckResponse = _declare_messages()


def encode_request(service: str) -> bytes:
    """HealthCheckRequest{service} on the wire."""
    return HealthCheckRequest(service=service).SerializeToString()


def decode_status(data: bytes) -> HealthStatus:
    """The HealthStatus in a HealthCheckResponse; numbers this client does not know read UNKNOWN."""
    try:
        return HealthStatus(HealthCheckResponse.FromString(data).status)
    except ValueError:
        return HealthStatus.UNKNOWN
