"""Encoder and scorer on a Triton server over gRPC (tritonclient's asyncio client).

The gateway keeps the catalog and the FAISS index; Triton runs the models (GPU in production).
`load` asks Triton (explicit model control) for a version it does not serve yet, then checks
that the version is ready and accepts the gateway's batches, so a model Triton cannot load or a
batch size it would refuse is a clear error at start-up, not at traffic; `unload` has Triton
keep only the versions the gateway still serves. Afterwards the health probe
(`healthy`) loads them again when Triton comes back without them (a restart).

Triton's errors are mapped by status: unreachable, UNAVAILABLE and a missing or unready model
are UNAVAILABLE (retry elsewhere); a timeout is the engine's to judge; INVALID_ARGUMENT means
Triton refused tensors the gateway built from validated requests, a gateway or deployment bug,
so INTERNAL, like every other status: a client's mistake never becomes a retried UNAVAILABLE.

With TLS (--triton-tls) tritonclient reads the CA and client certificate files once, at start;
a failed handshake looks like an unreachable server, so the start-up error says what to check.
"""

import asyncio
import json
import logging
from pathlib import Path

import numpy as np

from logitrec import repository as layout
from logitrec.errors import InputError
from serving.errors import BackendRejected, BackendTimeout, BackendUnavailable, GatewayError
from serving.registry import ModelVersion

log = logging.getLogger("logitrec.gateway")
CHECK_SECONDS = 1.0  # each health check's timeout: a stopped server must not stall the probe
RELOAD_SECONDS = 60.0  # loading a model again after Triton lost it
MESSAGE_CHARS = 300  # of Triton's text in an error: enough to diagnose, never unbounded
UNAVAILABLE_STATUSES = ("UNAVAILABLE", "NOT_FOUND", "CANCELLED")
# tritonclient's own message limits, plus a short reconnect backoff: gRPC's default grows to two
# minutes, which kept the probe failing ~10 s after a Triton down for a minute was back.
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def _path_text(path: Path | None) -> str | None:
    """tritonclient reads the PEM files itself and wants their paths as text."""
    return None if path is None else str(path)


def backend_error(error, what: str) -> GatewayError:
    """tritonclient's InferenceServerException -> the gateway error its gRPC status calls for
    (`what`: which call, for the message)."""
    status = str(error.status() or "").removeprefix("StatusCode.")
    text = str(error.message() or status or "no message")
    if len(text) > MESSAGE_CHARS:
        text = text[:MESSAGE_CHARS] + "..."
    message = f"Triton {what} failed ({status or 'client error'}): {text}"
    if status == "DEADLINE_EXCEEDED":
        return BackendTimeout(message)
    if status in UNAVAILABLE_STATUSES or "ready state" in text:
        return BackendUnavailable(message)
    if status == "INVALID_ARGUMENT":
        return BackendRejected(message)
    return GatewayError(message)


class TritonBackend:
    name = "triton"

    def __init__(
        self,
        url: str,
        *,
        max_batch_size: int,
        tls: bool = False,
        root_certs: Path | None = None,
        client_cert: Path | None = None,
        client_key: Path | None = None,
    ) -> None:
        """`tls`: talk TLS to Triton, trusting `root_certs` (PEM CAs; None: the system's) and
        presenting `client_cert`/`client_key` when Triton requires client certificates."""
        import tritonclient.grpc.aio as grpcclient

        self._grpcclient = grpcclient
        self.url = url
        self.max_batch_size = max_batch_size
        self.tls = tls
        self.client = grpcclient.InferenceServerClient(
            url,
            ssl=tls,
            root_certificates=_path_text(root_certs),
            private_key=_path_text(client_key),
            certificate_chain=_path_text(client_cert),
            channel_args=CHANNEL_ARGS,
        )
        self.models: set[tuple[str, int]] = set()  # (name, version) loaded: what the probe checks
        # Model control calls one at a time: the probe's reload and an admin roll-in may meet.
        self._control = asyncio.Lock()

    async def load(self, model: ModelVersion) -> None:
        for kind in layout.SERVED_KINDS:
            name = layout.model_name(model.name, kind)
            try:
                ready = await self.client.is_model_ready(name, str(model.version))
                if ready:
                    config = await self.client.get_model_config(
                        name, str(model.version), as_json=True
                    )
            except Exception as error:
                raise self._unreachable(error) from None
            if not ready:
                config = await self._load_version(name, model)
            self._check_batch_size(name, int(config["config"].get("max_batch_size", 0)))
        self.models.add((model.name, model.version))

    def _unreachable(self, error: Exception) -> BackendUnavailable:
        """Triton's first answer failed: most often it is down, or the two ends disagree on
        TLS (a refused handshake reads like a closed connection), so say what to check."""
        text = str(error)
        if len(text) > MESSAGE_CHARS:
            text = text[:MESSAGE_CHARS] + "..."
        if not self.tls:
            return BackendUnavailable(
                f"Triton at {self.url} is unreachable ({text}); check that Triton runs there, "
                "and if it serves TLS, pass --triton-tls (with --triton-root-certs for a "
                "private CA)"
            )
        return BackendUnavailable(
            f"Triton at {self.url} cannot be reached over TLS ({text}); check that Triton runs "
            "there with TLS, that --triton-root-certs holds the CA that signed its certificate "
            "(issued for the host in --triton-url), and, if Triton requires client "
            "certificates, --triton-client-cert and --triton-client-key"
        )

    async def _load_version(self, name: str, model: ModelVersion) -> dict:
        """Have Triton serve `model`'s version of graph `name` too; that version's config."""
        versions = {v for n, v in self.models if n == model.name} | {model.version}
        try:
            await self._serve_versions(name, versions)
            ready = await self.client.is_model_ready(name, str(model.version))
            if ready:
                return await self.client.get_model_config(name, str(model.version), as_json=True)
        except self._grpcclient.InferenceServerException as error:
            raise BackendUnavailable(
                f"Triton at {self.url} could not load {name} version {model.version}: "
                f"{str(error.message())[:MESSAGE_CHARS]}"
            ) from None
        raise BackendUnavailable(
            f"Triton at {self.url} has no ready {name} version {model.version} after loading it"
        )

    async def _serve_versions(self, name: str, versions: set[int]) -> None:
        """Explicit model control: Triton serves exactly `versions` of graph `name` (none: the
        model is unloaded). Versions that stay keep serving while Triton reloads."""
        async with self._control:
            await self._apply_versions(name, versions)

    async def _apply_versions(self, name: str, versions: set[int]) -> None:
        if not versions:
            await self.client.unload_model(name, client_timeout=RELOAD_SECONDS)
            return
        if not await self.client.is_model_ready(name, client_timeout=CHECK_SECONDS):
            await self.client.load_model(name, client_timeout=RELOAD_SECONDS)
        config = await self.client.get_model_config(
            name, as_json=True, client_timeout=CHECK_SECONDS
        )
        config = config["config"]
        policy = {"specific": {"versions": [str(v) for v in sorted(versions)]}}
        if config.get("version_policy") != policy:
            config["version_policy"] = policy
            await self.client.load_model(
                name, config=json.dumps(config), client_timeout=RELOAD_SECONDS
            )

    async def unload(self, model: ModelVersion) -> None:
        self.models.discard((model.name, model.version))
        versions = {v for n, v in self.models if n == model.name}
        for kind in layout.SERVED_KINDS:
            name = layout.model_name(model.name, kind)
            try:
                await self._serve_versions(name, versions)
            except self._grpcclient.InferenceServerException as error:
                # The gateway no longer sends it anything; Triton keeping it costs only memory.
                log.warning(
                    "Triton at %s could not unload %s version %d: %s",
                    self.url,
                    name,
                    model.version,
                    str(error.message())[:MESSAGE_CHARS],
                )

    def _check_batch_size(self, name: str, triton_limit: int) -> None:
        if triton_limit and self.max_batch_size > triton_limit:
            raise InputError(
                f"--max-batch-size {self.max_batch_size} exceeds the max_batch_size "
                f"{triton_limit} that Triton serves {name} with; lower --max-batch-size to "
                f"{triton_limit} or less"
            )

    def _input(self, name: str, array: np.ndarray, dtype: str):
        tensor = self._grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        return tensor

    async def _infer(self, model: ModelVersion, kind: str, inputs, output: str, timeout: float):
        try:
            result = await self.client.infer(
                layout.model_name(model.name, kind),
                inputs,
                model_version=str(model.version),
                client_timeout=timeout,
            )
        except self._grpcclient.InferenceServerException as error:
            raise backend_error(error, kind) from None
        return result.as_numpy(output)

    async def encode(self, model, items, context, *, timeout: float) -> np.ndarray:
        inputs = [self._input(layout.ITEMS, items, "INT64")]
        if context.shape[1]:
            inputs.append(self._input(layout.CONTEXT, context, "INT64"))
        return await self._infer(model, "encoder", inputs, layout.USER_VECTOR, timeout)

    async def score(self, model, user_vectors, candidates, *, timeout: float) -> np.ndarray:
        vectors = np.ascontiguousarray(user_vectors, np.float32)
        inputs = [
            self._input(layout.USER_VECTOR, vectors, "FP32"),
            self._input(layout.CANDIDATES, candidates, "INT64"),
        ]
        return await self._infer(model, "scorer", inputs, layout.LOGITS, timeout)

    # -- the health probe -------------------------------------------------------------------
    async def healthy(self) -> bool:
        """Server live and every loaded version's encoder and scorer ready; models Triton lost
        (restarted in explicit model control) are loaded again first. Not the server's own
        readiness: Triton reports not-ready while it loads any model, a roll-in included, and
        the versions already served keep answering meanwhile."""
        client = self.client
        try:
            if not await client.is_server_live(client_timeout=CHECK_SECONDS):
                return False
            missing = await self._not_ready()
            if not missing:
                return True
            for triton_name, name in missing:
                log.info("Triton at %s lacks %s: loading it again", self.url, triton_name)
                await self._serve_versions(triton_name, {v for n, v in self.models if n == name})
            return not await self._not_ready()
        except self._grpcclient.InferenceServerException:
            return False

    async def _not_ready(self) -> list[tuple[str, str]]:
        """(Triton model name, gateway model name) of each graph with a loaded version that
        Triton does not have ready."""
        missing = []
        for name, version in sorted(self.models):
            for kind in layout.SERVED_KINDS:
                triton_name = layout.model_name(name, kind)
                ready = await self.client.is_model_ready(
                    triton_name, str(version), client_timeout=CHECK_SECONDS
                )
                if not ready and (triton_name, name) not in missing:
                    missing.append((triton_name, name))
        return missing

    async def close(self) -> None:
        await self.client.close()
