"""gRPC health checking (grpc.health.v1) whose Watch streams end on shutdown.

The reference servicer keeps a Watch open until the server stops, so one watching load balancer
holds a stopping gateway for its whole grace period; here `close()` sends NOT_SERVING to every
watcher and ends their streams.
"""

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


class HealthService(health_pb2_grpc.HealthServicer):
    def __init__(self, services: tuple[str, ...]) -> None:
        self._status = dict.fromkeys(services, NOT_SERVING)
        self._changed = asyncio.Condition()
        self._closed = False

    async def set_all(self, status) -> None:
        async with self._changed:
            if self._closed:
                return  # shutting down: NOT_SERVING for good
            for service in self._status:
                self._status[service] = status
            self._changed.notify_all()

    async def close(self) -> None:
        """NOT_SERVING from now on; every Watch stream gets it and ends."""
        async with self._changed:
            self._closed = True
            for service in self._status:
                self._status[service] = NOT_SERVING
            self._changed.notify_all()

    async def Check(self, request, context):
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request, context):
        last = None
        while True:
            async with self._changed:
                status = self._status.get(
                    request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
                )
                closed = self._closed
                if status == last and not closed:
                    await self._changed.wait()
                    continue
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if closed:
                return
