"""ONNX Runtime in the gateway's process (CUDA when the installed onnxruntime has it, else CPU).

Sessions run in a thread pool: ONNX Runtime releases the GIL, and the event loop keeps
accepting requests (and forming the next batch) while a batch computes.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

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

    async def encode(self, model, items, context) -> np.ndarray:
        feed = {"items": items}
        if context.shape[1]:
            feed["context"] = context
        session = self._sessions[(model.name, model.version)]["encoder"]
        loop = asyncio.get_running_loop()
        (vectors,) = await loop.run_in_executor(self.executor, session.run, None, feed)
        return vectors

    async def score(self, model, user_vectors, candidates) -> np.ndarray:
        session = self._sessions[(model.name, model.version)]["scorer"]
        feed = {"user_vector": user_vectors, "candidates": candidates}
        loop = asyncio.get_running_loop()
        (logits,) = await loop.run_in_executor(self.executor, session.run, None, feed)
        return logits

    async def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
