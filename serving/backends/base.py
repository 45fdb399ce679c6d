"""The backend protocol: load a model version, encode histories, score candidates."""

from typing import Protocol

import numpy as np

from serving.registry import ModelVersion


class Backend(Protocol):
    name: str

    async def load(self, model: ModelVersion) -> None:
        """Make `model` ready to serve (sessions created, or the server has it loaded)."""

    async def encode(
        self, model: ModelVersion, items: np.ndarray, context: np.ndarray
    ) -> np.ndarray:
        """items [B, L] (left-padded), context [B, F] -> user vectors [B, d] float32."""

    async def score(
        self, model: ModelVersion, user_vectors: np.ndarray, candidates: np.ndarray
    ) -> np.ndarray:
        """user vectors [B, d] + candidates [B, C] (0 = padding) -> logits [B, C] float32."""

    async def close(self) -> None: ...
