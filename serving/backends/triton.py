"""Encoder and scorer on a Triton server over gRPC (tritonclient's asyncio client).

The gateway keeps the catalog and the FAISS index; Triton runs the models (GPU in production).
Models are loaded in Triton's explicit mode by whoever deploys them; `load` here only checks
that the version is ready, so a missing model is a clear error at start-up, not at traffic.
"""

import numpy as np

from serving.errors import BackendUnavailable
from serving.registry import ModelVersion


class TritonBackend:
    name = "triton"

    def __init__(self, url: str) -> None:
        import tritonclient.grpc.aio as grpcclient

        self._grpcclient = grpcclient
        self.url = url
        self.client = grpcclient.InferenceServerClient(url)

    async def load(self, model: ModelVersion) -> None:
        for kind in ("encoder", "scorer"):
            name = f"{model.name}_{kind}"
            try:
                ready = await self.client.is_model_ready(name, str(model.version))
            except Exception as error:
                raise BackendUnavailable(f"Triton at {self.url} is unreachable ({error})") from None
            if not ready:
                raise BackendUnavailable(
                    f"Triton at {self.url} has no ready {name} version {model.version} "
                    "(load it: explicit model control)"
                )

    def _input(self, name: str, array: np.ndarray, dtype: str):
        tensor = self._grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        return tensor

    async def _infer(self, model: ModelVersion, kind: str, inputs, output: str) -> np.ndarray:
        try:
            result = await self.client.infer(
                f"{model.name}_{kind}", inputs, model_version=str(model.version)
            )
        except self._grpcclient.InferenceServerException as error:
            raise BackendUnavailable(f"Triton {kind} failed: {error.message()}") from None
        return result.as_numpy(output)

    async def encode(self, model, items, context) -> np.ndarray:
        inputs = [self._input("items", items, "INT64")]
        if context.shape[1]:
            inputs.append(self._input("context", context, "INT64"))
        return await self._infer(model, "encoder", inputs, "user_vector")

    async def score(self, model, user_vectors, candidates) -> np.ndarray:
        inputs = [
            self._input("user_vector", np.ascontiguousarray(user_vectors, np.float32), "FP32"),
            self._input("candidates", candidates, "INT64"),
        ]
        return await self._infer(model, "scorer", inputs, "logits")

    async def close(self) -> None:
        await self.client.close()
