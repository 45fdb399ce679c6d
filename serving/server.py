"""The gateway process: gRPC aio server with health checking, reflection and /metrics.

Health says SERVING only while every model version is loaded and warmed up, the backend answers
its probe, and no shutdown has begun. Shutdown (SIGTERM, SIGINT) drains: NOT_SERVING first
(Watch streams told and closed), requests still served for `drain_seconds` so load balancers
can react, then new calls refused with UNAVAILABLE while every admitted request finishes
(within `grace_seconds`), a short moment of clean refusals, then exit.

Model versions change while serving (serving.lifecycle): SIGHUP, and every `poll_seconds` when
set, rescan the repository for new versions; the admin service (serving.admin) loads and
unloads them on demand.

Security (docs/security.md): TLS (mutual with a client CA) from files, bearer tokens with roles
checked by an interceptor before a request is decoded (serving.auth), both re-read when their
files change and on SIGHUP (serving.credentials). With tokens, reflection and /metrics are off
unless asked for, and the admin service needs the admin role; health is always open.
"""

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from contextlib import suppress

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from logitrec_client.proto import admin_pb2, recommender_pb2

from logitrec.errors import InputError
from serving import auth
from serving.admin import ModelAdminService
from serving.backends import make_backend
from serving.config import ServeConfig, exposure, exposure_warnings
from serving.credentials import Credentials
from serving.engine import Engine
from serving.grpc_handlers import add_servicer
from serving.health import NOT_SERVING, SERVING, HealthService
from serving.metrics import GatewayMetrics
from serving.service import RecommenderService

log = logging.getLogger("logitrec.gateway")
RECOMMENDER = recommender_pb2.DESCRIPTOR.services_by_name["RecommenderService"]
SERVICE_NAME = RECOMMENDER.full_name
HEALTH_SERVICE_NAME = "grpc.health.v1.Health"
ADMIN = admin_pb2.DESCRIPTOR.services_by_name["ModelAdminService"]
# Who may call what once tokens are configured (services not named here need any valid token).
ROLE_NEEDED = {
    SERVICE_NAME: auth.RECOMMEND,
    ADMIN.full_name: auth.ADMIN,
    HEALTH_SERVICE_NAME: auth.OPEN,  # load balancers and kubelets probe without credentials
    reflection.SERVICE_NAME: auth.RECOMMEND,
}
REFUSE_SECONDS = 0.5  # after the last admitted request: refusing, not yet closed


class Gateway:
    """Start, serve, stop. `port` is the bound port (useful when the config asked for 0)."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.metrics = GatewayMetrics()
        self.health = HealthService(("", SERVICE_NAME))
        self.server: grpc.aio.Server | None = None
        self.engine: Engine | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.draining = False
        self._metrics_server = None
        self._tasks: list[asyncio.Task] = []
        self._stopped = False
        self.credentials: Credentials | None = None
        self._rescan_requested = asyncio.Event()  # set by SIGHUP
        self._reload_requested = asyncio.Event()  # set by SIGHUP

    # -- health and background work -------------------------------------------------------
    async def refresh_health(self) -> None:
        """SERVING exactly when requests can be answered now."""
        ready = self.engine is not None and self.engine.ready
        serving = ready and self.engine.backend_healthy and not self.draining
        await self.health.set_all(SERVING if serving else NOT_SERVING)

    def spawn(self, work: Coroutine, name: str) -> asyncio.Task:
        """A background task that lives until the gateway stops (its failures are logged)."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        task.add_done_callback(self._report_task)
        self._tasks.append(task)
        return task

    @staticmethod
    def _report_task(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def _probe_backend(self) -> None:
        """Ask the backend every backend_probe_seconds whether it can serve; health and the
        engine's fail-fast follow the verdict (one log line per change)."""
        while True:
            problem = ""
            try:
                healthy = await self.engine.backend.healthy()
            except Exception as error:  # a probe that cannot tell is a no
                healthy, problem = False, f": {type(error).__name__}: {str(error)[:200]}"
            if healthy != self.engine.backend_healthy:
                self.engine.backend_healthy = healthy
                if healthy:
                    log.info("backend %s healthy again: SERVING", self.config.backend)
                else:
                    log.warning("backend %s unhealthy%s: NOT_SERVING", self.config.backend, problem)
                await self.refresh_health()
            await asyncio.sleep(self.config.backend_probe_seconds)

    async def _watch_repository(self) -> None:
        """Look for new model versions every poll_seconds (when > 0) and on SIGHUP; one scan
        at a time, and a failed scan never ends the watch."""
        while True:
            try:
                await asyncio.wait_for(
                    self._rescan_requested.wait(), self.config.poll_seconds or None
                )
                trigger = "SIGHUP"
            except TimeoutError:
                trigger = "poll"
            self._rescan_requested.clear()
            try:
                await self.engine.lifecycle.rescan(trigger)
            except Exception:
                log.exception("rescanning %s failed", self.config.repository)

    async def _watch_credentials(self) -> None:
        """Re-read changed TLS and token files every credentials_poll_seconds (when > 0), and
        all of them on SIGHUP."""
        while True:
            try:
                await asyncio.wait_for(
                    self._reload_requested.wait(), self.config.credentials_poll_seconds or None
                )
                forced = True
            except TimeoutError:
                forced = False
            self._reload_requested.clear()
            self.credentials.reload(force=forced)

    def _on_sighup(self) -> None:
        self._rescan_requested.set()
        self._reload_requested.set()

    def _on_denied(self, denial: auth.Denial, method: str, peer: str) -> None:
        self.metrics.denied.labels(denial.code.name).inc()
        auth.log_denial(denial, method, peer)

    # -- life cycle ---------------------------------------------------------------------------
    def _grpc_server(self, authenticating: bool) -> grpc.aio.Server:
        interceptors = []
        if authenticating:
            current = self.credentials  # the interceptor reads its tokens as they are reloaded
            interceptors.append(
                auth.AuthInterceptor(lambda: current.tokens, ROLE_NEEDED, self._on_denied)
            )
        options = [
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        return grpc.aio.server(
            options=options,
            interceptors=interceptors,
            maximum_concurrent_rpcs=self.config.max_concurrent_rpcs or None,
        )

    def _listen(self) -> int:
        """Bind the gRPC port, TLS when certificates are configured; the bound port."""
        address = f"{self.config.host}:{self.config.port}"
        try:
            if self.credentials.certificates is not None:
                tls = self.credentials.certificates.credentials()
                return self.server.add_secure_port(address, tls)
            return self.server.add_insecure_port(address)
        except RuntimeError:
            raise InputError(
                f"--host/--port: cannot listen on {address} (in use, or not this machine's)"
            ) from None

    def _serve_metrics(self) -> None:
        from prometheus_client import start_http_server

        self._metrics_server, _ = start_http_server(
            self.config.metrics_port,
            addr=self.config.metrics_host or self.config.host,
            registry=self.metrics.registry,
        )
        self.metrics_port = self._metrics_server.server_port

    async def start(self) -> None:
        self.credentials = Credentials(self.config)
        authenticating = self.credentials.authenticating
        exposed = exposure(self.config, authenticating)
        for warning in exposure_warnings(self.config, exposed, authenticating):
            log.warning(warning)
        self.server = self._grpc_server(authenticating)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if exposed.reflection:
            services = (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME)
            services += (ADMIN.full_name,) if exposed.admin else ()
            reflection.enable_server_reflection(services, self.server)
        self.port = self._listen()
        if exposed.metrics:
            self._serve_metrics()
        self.engine = Engine(self.config, make_backend(self.config), self.metrics)
        recommender = RecommenderService(self.engine)
        add_servicer(self.server, recommender, RECOMMENDER, on_undecodable=recommender.undecodable)
        if exposed.admin:  # operators' API: behind the admin role when callers authenticate
            add_servicer(self.server, ModelAdminService(self.engine), ADMIN)
        await self.server.start()  # health answers NOT_SERVING (and RPCs UNAVAILABLE) meanwhile
        await self.engine.load_all()
        self.spawn(self._probe_backend(), "backend-probe")
        self.spawn(self._watch_repository(), "repository-watch")
        self.spawn(self._watch_credentials(), "credentials-watch")
        await self.refresh_health()
        log.info(
            "serving %s on %s:%d (%s backend; %s; %s)",
            ", ".join(
                f"{n} v{self.engine.registry.versions(n)}" for n in self.engine.registry.names()
            ),
            self.config.host,
            self.port,
            self.config.backend,
            ("mutual TLS" if self.config.tls_client_ca else "TLS") if self.config.tls
            else "plaintext",
            f"{len(self.credentials.tokens)} token(s)" if authenticating else "no tokens",
        )  # fmt: skip

    async def stop(self) -> None:
        """Drain, then stop: see the module docstring. Safe to call more than once."""
        if self.server is None or self._stopped:
            return
        self._stopped = True
        self.draining = True
        await self.health.close()
        if self.engine is not None and self.engine.ready and self.config.drain_seconds:
            log.info("draining: NOT_SERVING, still answering for %.1f s", self.config.drain_seconds)
            await asyncio.sleep(self.config.drain_seconds)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.engine is not None:
            # New calls are refused from here on; the admitted ones finish.
            with suppress(TimeoutError):
                await asyncio.wait_for(self.engine.close(), self.config.grace_seconds)
            # A caller answered just now may send once more: refuse it cleanly (UNAVAILABLE,
            # which clients retry elsewhere) before the port closes and gRPC cancels calls.
            await asyncio.sleep(REFUSE_SECONDS)
        await self.server.stop(self.config.grace_seconds)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()

    async def serve_forever(self, on_ready: Callable[["Gateway"], None] | None = None) -> None:
        try:
            await self.start()
        except BaseException:
            await self.stop()  # nothing was served yet: no drain period
            raise
        loop = asyncio.get_running_loop()
        # SIGHUP rescans the repository and re-reads the credentials; handled before the
        # gateway says it is ready, so a SIGHUP sent the moment it is cannot end the process.
        with suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        if on_ready is not None:
            on_ready(self)
        stopping = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with suppress(NotImplementedError):
                loop.add_signal_handler(sig, stopping.set)
        try:
            await stopping.wait()
        finally:
            log.info("shutting down: draining in-flight requests")
            await self.stop()
