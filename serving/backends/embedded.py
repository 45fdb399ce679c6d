"""ONNX Runtime in the gateway's process (CUDA when the installed onnxruntime has it, else CPU).

Sessions run in a thread pool, so the event loop stays free for gRPC while a batch computes:
requests keep arriving and queue up for the next batch (the batcher runs one batch at a time).
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from logitrec.repository import CANDIDATES, CONTEXT, ITEMS, USER_VECTOR
from serving.registry import ModelVersion


class EmbeddedBackend:
    name = "embedded"

    def __init__(self, threads: int | None = None, workers: int = 2) -> None:
        self.threads = threads
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ort")
        self._sessions: dict[tuple[str, int], dict] = {}

    def _session(self, path):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        available = onnxruntime.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        return onnxruntime.InferenceSession(str(path), options, providers=providers)

    async def load(self, model: ModelVersion) -> None:
        loop = asyncio.get_running_loop()
        encoder, scorer = await asyncio.gather(
            loop.run_in_executor(self.executor, self._session, model.encoder_path),
            loop.run_in_executor(self.executor, self._session, model.scorer_path),
        )
        self._sessions[(model.name, model.version)] = {"encoder": encoder, "scorer": scorer}

    async def _run(self, model: ModelVersion, kind: str, feed: dict) -> np.ndarray:
        session = self._sessions[(model.name, model.version)][kind]
        loop = asyncio.get_running_loop()
        (output,) = await loop.run_in_executor(self.executor, session.run, None, feed)
        return output

    async def encode(self, model, items, context) -> np.ndarray:
        feed = {ITEMS: items}
        if context.shape[1]:
            feed[CONTEXT] = context
        return await self._run(model, "encoder", feed)

    async def score(self, model, user_vectors, candidates) -> np.ndarray:
        return await self._run(model, "scorer", {USER_VECTOR: user_vectors, CANDIDATES: candidates})

    async def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
