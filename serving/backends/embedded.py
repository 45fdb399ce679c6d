"""ONNX Runtime in the gateway's process, on the CPU or a CUDA GPU (--device, --tensorrt).

Sessions run in a thread pool, so the event loop stays free for gRPC while a batch computes:
requests keep arriving and queue up for the next batch (the batcher runs one batch at a time).
On a GPU, calls go through IO binding (serving.backends.iobinding): the encoder's user vectors
stay in device memory for the scorer.
"""

import asyncio
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from logitrec.errors import InputError
from logitrec.repository import CANDIDATES, CONTEXT, ITEMS, USER_VECTOR
from logitrec.runtime_check import check_runtime
from serving.backends.iobinding import DeviceVectors, encode_bound, score_bound
from serving.backends.providers import check_active, choose_providers, tensorrt_options
from serving.errors import BackendTimeout
from serving.registry import ModelVersion

# Where TensorRT keeps the engines it builds (minutes for a large model): across restarts.
TENSORRT_CACHE = Path(tempfile.gettempdir()) / "logitrec-tensorrt"


class EmbeddedBackend:
    name = "embedded"

    def __init__(
        self,
        threads: int | None = None,
        workers: int = 2,
        spinning: bool = False,
        device: str = "auto",
        tensorrt: bool = False,
        max_batch_size: int = 64,
        max_candidates: int = 10_000,
    ) -> None:
        """`max_batch_size` and `max_candidates` bound the shapes TensorRT builds engines for
        (rows per call; candidates per row)."""
        import onnxruntime

        check_runtime()
        self.threads = threads
        self.spinning = spinning
        self.device = device
        self.tensorrt = tensorrt
        self.max_batch_size = max_batch_size
        self.max_candidates = max_candidates
        # Refused here, at start, when the device asked for is not there.
        chosen = choose_providers(device, onnxruntime.get_available_providers(), tensorrt=tensorrt)
        self.on_gpu = chosen[0].on_gpu
        if self.on_gpu:
            _probe(chosen)
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ort")
        self._sessions: dict[tuple[str, int], dict] = {}
        self._device_vectors = DeviceVectors()

    def _session(self, path, kind: str, model: ModelVersion):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        if not self.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        chosen = choose_providers(
            self.device,
            onnxruntime.get_available_providers(),
            tensorrt=self.tensorrt,
            tensorrt_options=self._tensorrt_options(kind, model) if self.tensorrt else None,
        )
        session = onnxruntime.InferenceSession(
            str(path),
            options,
            providers=[p.name for p in chosen],
            provider_options=[p.options for p in chosen],
        )
        check_active(chosen, session.get_providers())
        return session

    def _tensorrt_options(self, kind: str, model: ModelVersion) -> dict:
        rows = self.max_batch_size
        if kind == "encoder":
            shapes = {ITEMS: ((1, 1), (rows, model.max_length))}
            if model.context_features:
                width = len(model.context_features)
                shapes[CONTEXT] = ((1, width), (rows, width))
        else:
            d = model.hidden_size
            shapes = {
                USER_VECTOR: ((1, d), (rows, d)),
                CANDIDATES: ((1, 1), (rows, self.max_candidates)),
            }
        cache = TENSORRT_CACHE / f"{model.name}-{model.version}-{kind}"
        cache.mkdir(parents=True, exist_ok=True)
        return tensorrt_options(shapes, str(cache), fp16=model.manifest.precision == "fp16")

    def _open(self, path, kind: str, model: ModelVersion):
        try:
            return self._session(path, kind, model)
        except InputError:
            raise  # a GPU provider that did not start: the whole backend's problem, said so
        except Exception as error:  # onnxruntime's own exception types: a broken graph file
            reason = (str(error).splitlines() or [type(error).__name__])[0][:200]
            raise InputError(f"{path}: ONNX Runtime cannot load it ({reason})") from None

    async def load(self, model: ModelVersion) -> None:
        # Sessions are made outside the inference pool: a version rolled in while others
        # serve must not hold their batches up.
        loop = asyncio.get_running_loop()
        encoder, scorer = await asyncio.gather(
            loop.run_in_executor(None, self._open, model.encoder_path, "encoder", model),
            loop.run_in_executor(None, self._open, model.scorer_path, "scorer", model),
        )
        self._sessions[(model.name, model.version)] = {"encoder": encoder, "scorer": scorer}

    async def unload(self, model: ModelVersion) -> None:
        # A computation that outlived its timeout still holds its session until it ends.
        self._sessions.pop((model.name, model.version), None)

    def _session_of(self, model: ModelVersion, kind: str):
        return self._sessions[(model.name, model.version)][kind]

    async def _run(self, kind: str, call, timeout: float):
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self.executor, call)
        try:
            # ONNX Runtime cannot be interrupted: the caller stops waiting here, but the
            # computation runs on to its end in its worker thread.
            return await asyncio.wait_for(work, timeout)
        except TimeoutError:
            raise BackendTimeout(f"ONNX Runtime {kind} took over {timeout:.3g} s") from None

    async def encode(self, model, items, context, *, timeout: float) -> np.ndarray:
        feed = {ITEMS: items}
        if context.shape[1]:
            feed[CONTEXT] = context
        session = self._session_of(model, "encoder")
        if not self.on_gpu:
            (vectors,) = await self._run("encoder", partial(session.run, None, feed), timeout)
            return vectors
        call = partial(encode_bound, session, feed, "cuda")
        vectors, on_device = await self._run("encoder", call, timeout)
        self._device_vectors.keep(vectors, on_device)
        return vectors

    async def score(self, model, user_vectors, candidates, *, timeout: float) -> np.ndarray:
        session = self._session_of(model, "scorer")
        if not self.on_gpu:
            feed = {USER_VECTOR: user_vectors, CANDIDATES: candidates}
            (logits,) = await self._run("scorer", partial(session.run, None, feed), timeout)
            return logits
        # The encoder's device copy when these are exactly its vectors (every row of the batch
        # scored by the scorer); a subset of rows goes up from the host.
        vectors = self._device_vectors.find(user_vectors)
        vectors = user_vectors if vectors is None else vectors
        call = partial(score_bound, session, vectors, candidates, "cuda")
        return await self._run("scorer", call, timeout)

    async def healthy(self) -> bool:
        return True  # in-process: if the gateway answers its health check, so does this

    async def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _probe(chosen) -> None:
    """A one-node session on the chosen providers: a GPU provider whose libraries do not load
    is found at start, not when the first model version loads."""
    import onnxruntime
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    probe.ir_version = 8  # read by every onnxruntime the gpu extra allows
    session = onnxruntime.InferenceSession(
        probe.SerializeToString(),
        providers=[p.name for p in chosen],
        provider_options=[p.options for p in chosen],
    )
    check_active(chosen, session.get_providers())
