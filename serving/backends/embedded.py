"""ONNX Runtime in the gateway's process (CUDA when the installed onnxruntime has it, else CPU).

Sessions run in a thread pool, so the event loop stays free for gRPC while a batch computes:
requests keep arriving and queue up for the next batch (the batcher runs one batch at a time).
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from logitrec.errors import InputError
from logitrec.repository import CANDIDATES, CONTEXT, ITEMS, USER_VECTOR
from serving.errors import BackendTimeout
from serving.registry import ModelVersion


class EmbeddedBackend:
    name = "embedded"

    def __init__(
        self, threads: int | None = None, workers: int = 2, spinning: bool = False
    ) -> None:
        self.threads = threads
        self.spinning = spinning
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ort")
        self._sessions: dict[tuple[str, int], dict] = {}

    def _session(self, path):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        if not self.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = onnxruntime.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        return onnxruntime.InferenceSession(str(path), options, providers=providers)

    def _open(self, path):
        try:
            return self._session(path)
        except Exception as error:  # onnxruntime's own exception types: a broken graph file
            reason = (str(error).splitlines() or [type(error).__name__])[0][:200]
            raise InputError(f"{path}: ONNX Runtime cannot load it ({reason})") from None

    async def load(self, model: ModelVersion) -> None:
        # Sessions are made outside the inference pool: a version rolled in while others
        # serve must not hold their batches up.
        loop = asyncio.get_running_loop()
        encoder, scorer = await asyncio.gather(
            loop.run_in_executor(None, self._open, model.encoder_path),
            loop.run_in_executor(None, self._open, model.scorer_path),
        )
        self._sessions[(model.name, model.version)] = {"encoder": encoder, "scorer": scorer}

    async def unload(self, model: ModelVersion) -> None:
        # A computation that outlived its timeout still holds its session until it ends.
        self._sessions.pop((model.name, model.version), None)

    async def _run(self, model: ModelVersion, kind: str, feed: dict, timeout: float):
        session = self._sessions[(model.name, model.version)][kind]
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self.executor, session.run, None, feed)
        try:
            # ONNX Runtime cannot be interrupted: the caller stops waiting here, but the
            # computation runs on to its end in its worker thread.
            (output,) = await asyncio.wait_for(work, timeout)
        except TimeoutError:
            raise BackendTimeout(f"ONNX Runtime {kind} took over {timeout:.3g} s") from None
        return output

    async def encode(self, model, items, context, *, timeout: float) -> np.ndarray:
        feed = {ITEMS: items}
        if context.shape[1]:
            feed[CONTEXT] = context
        return await self._run(model, "encoder", feed, timeout)

    async def score(self, model, user_vectors, candidates, *, timeout: float) -> np.ndarray:
        feed = {USER_VECTOR: user_vectors, CANDIDATES: candidates}
        return await self._run(model, "scorer", feed, timeout)

    async def healthy(self) -> bool:
        return True  # in-process: if the gateway answers its health check, so does this

    async def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
