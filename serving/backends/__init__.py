"""Where the encoder and scorer run: in-process ONNX Runtime (embedded) or a Triton server."""

from serving.backends.base import Backend
from serving.config import ServeConfig


def make_backend(config: ServeConfig) -> Backend:
    if config.backend == "triton":
        from serving.backends.triton import TritonBackend

        return TritonBackend(
            config.triton_url,
            max_batch_size=config.max_batch_size,
            tls=config.triton_tls,
            root_certs=config.triton_root_certs,
            client_cert=config.triton_client_cert,
            client_key=config.triton_client_key,
        )
    from serving.backends.embedded import EmbeddedBackend

    return EmbeddedBackend(
        threads=config.threads,
        spinning=config.ort_spinning,
        device=config.device,
        tensorrt=config.tensorrt,
        max_batch_size=config.max_batch_size,
        # the scorer's widest call: pruned candidates, or an allowed list / Score's items
        max_candidates=max(config.candidate_count, config.max_ids),
    )


__all__ = ["Backend", "make_backend"]
