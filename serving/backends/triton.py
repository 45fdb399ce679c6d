"""Encoder and scorer on a Triton server over gRPC (tritonclient's asyncio client).

The gateway keeps the catalog and the FAISS index; Triton runs the models (GPU in production).
Models are loaded in Triton's explicit mode by whoever deploys them; `load` here only checks
that the version is ready and accepts the gateway's batches, so a missing model or a batch size
Triton would refuse is a clear error at start-up, not at traffic.
"""

import numpy as np

from logitrec import repository as layout
from logitrec.errors import InputError
from serving.errors import BackendUnavailable
from serving.registry import ModelVersion


class TritonBackend:
    name = "triton"

    def __init__(self, url: str, *, max_batch_size: int) -> None:
        import tritonclient.grpc.aio as grpcclient

        self._grpcclient = grpcclient
        self.url = url
        self.max_batch_size = max_batch_size
        self.client = grpcclient.InferenceServerClient(url)

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
                raise BackendUnavailable(f"Triton at {self.url} is unreachable ({error})") from None
            if not ready:
                raise BackendUnavailable(
                    f"Triton at {self.url} has no ready {name} version {model.version} "
                    "(load it: explicit model control)"
                )
            self._check_batch_size(name, int(config["config"].get("max_batch_size", 0)))

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

    async def _infer(self, model: ModelVersion, kind: str, inputs, output: str) -> np.ndarray:
        try:
            result = await self.client.infer(
                layout.model_name(model.name, kind), inputs, model_version=str(model.version)
            )
        except self._grpcclient.InferenceServerException as error:
            raise BackendUnavailable(f"Triton {kind} failed: {error.message()}") from None
        return result.as_numpy(output)

    async def encode(self, model, items, context) -> np.ndarray:
        inputs = [self._input(layout.ITEMS, items, "INT64")]
        if context.shape[1]:
            inputs.append(self._input(layout.CONTEXT, context, "INT64"))
        return await self._infer(model, "encoder", inputs, layout.USER_VECTOR)

    async def score(self, model, user_vectors, candidates) -> np.ndarray:
        vectors = np.ascontiguousarray(user_vectors, np.float32)
        inputs = [
            self._input(layout.USER_VECTOR, vectors, "FP32"),
            self._input(layout.CANDIDATES, candidates, "INT64"),
        ]
        return await self._infer(model, "scorer", inputs, layout.LOGITS)

    async def close(self) -> None:
        await self.client.close()
