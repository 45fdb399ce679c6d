"""The gateway process: gRPC aio server with health checking, reflection and /metrics.

Health says NOT_SERVING until every model version is loaded and has answered a warm-up batch,
and turns NOT_SERVING again first thing on shutdown, so load balancers drain it before the
in-flight requests are finished and the server stops.
"""

import asyncio
import logging
import signal
from collections.abc import Callable
from contextlib import suppress

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from logitrec_client.proto import recommender_pb2, recommender_pb2_grpc

from serving.backends import make_backend
from serving.config import ServeConfig
from serving.engine import Engine
from serving.metrics import GatewayMetrics
from serving.service import RecommenderService

log = logging.getLogger("logitrec.gateway")
SERVICE_NAME = recommender_pb2.DESCRIPTOR.services_by_name["RecommenderService"].full_name


class Gateway:
    """Start, serve, stop. `port` is the bound port (useful when the config asked for 0)."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.metrics = GatewayMetrics()
        self.health: health.aio.HealthServicer | None = None
        self.server: grpc.aio.Server | None = None
        self.engine: Engine | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._metrics_server = None

    async def _set_health(self, status) -> None:
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def start(self) -> None:
        options = [
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self.server = grpc.aio.server(options=options)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = self.server.add_insecure_port(f"{self.config.host}:{self.config.port}")
        if self.config.metrics_port is not None:
            from prometheus_client import start_http_server

            self._metrics_server, _ = start_http_server(
                self.config.metrics_port, addr=self.config.host, registry=self.metrics.registry
            )
            self.metrics_port = self._metrics_server.server_port
        self.engine = Engine(self.config, make_backend(self.config), self.metrics)
        recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(
            RecommenderService(self.engine), self.server
        )
        await self.server.start()  # health answers NOT_SERVING (and RPCs UNAVAILABLE) meanwhile
        await self.engine.load_all()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving %s on %s:%d (%s backend)",
            ", ".join(
                f"{n} v{self.engine.registry.versions(n)}" for n in self.engine.registry.names()
            ),
            self.config.host,
            self.port,
            self.config.backend,
        )

    async def stop(self) -> None:
        """NOT_SERVING first, then drain: queued requests finish within the grace period."""
        if self.server is None:
            return
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.engine is not None:
            with suppress(TimeoutError):
                await asyncio.wait_for(self.engine.close(), self.config.grace_seconds)
        await self.server.stop(self.config.grace_seconds)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()

    async def serve_forever(self, on_ready: Callable[["Gateway"], None] | None = None) -> None:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        if on_ready is not None:
            on_ready(self)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with suppress(NotImplementedError):
                loop.add_signal_handler(sig, stopping.set)
        try:
            await stopping.wait()
        finally:
            log.info("shutting down: draining in-flight requests")
            await self.stop()
