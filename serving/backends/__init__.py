"""Where the encoder and scorer run: in-process ONNX Runtime (embedded) or a Triton server."""

from serving.backends.base import Backend
from serving.config import ServeConfig


def make_backend(config: ServeConfig) -> Backend:
    if config.backend == "triton":
        from serving.backends.triton import TritonBackend

        return TritonBackend(config.triton_url, max_batch_size=config.max_batch_size)
    from serving.backends.embedded import EmbeddedBackend

    return EmbeddedBackend(threads=config.threads)


__all__ = ["Backend", "make_backend"]
