"""Triton config.pbtxt text for the exported models (pure functions of their tensor specs)."""

from dataclasses import dataclass

PREFERRED_BATCH_SIZES = (8, 16, 32)
MAX_BATCH_SIZE = 64
QUEUE_DELAY_MICROSECONDS = 500


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # Triton type: TYPE_INT64, TYPE_FP32
    dims: tuple[int, ...]  # without the batch dimension; -1 = variable


def model_tensors(kind: str, dim: int, context_tokens: int) -> tuple[list[Tensor], list[Tensor]]:
    """(inputs, outputs) of the encoder, scorer or topk model."""
    items = Tensor("items", "TYPE_INT64", (-1,))
    context = [Tensor("context", "TYPE_INT64", (context_tokens,))] if context_tokens else []
    if kind == "encoder":
        return [items, *context], [Tensor("user_vector", "TYPE_FP32", (dim,))]
    if kind == "scorer":
        return (
            [Tensor("user_vector", "TYPE_FP32", (dim,)), Tensor("candidates", "TYPE_INT64", (-1,))],
            [Tensor("logits", "TYPE_FP32", (-1,))],
        )
    if kind == "topk":
        return (
            [items, Tensor("k", "TYPE_INT64", (1,)), *context],
            [Tensor("top_logits", "TYPE_FP32", (-1,)), Tensor("top_items", "TYPE_INT64", (-1,))],
        )
    raise ValueError(kind)


def config_text(
    name: str,
    inputs: list[Tensor],
    outputs: list[Tensor],
    *,
    backend: str,
    device: str,
    instances: int = 1,
    versions_served: int = 2,
) -> str:
    """config.pbtxt for one model. Two versions stay loaded so an old one drains while the new
    one takes traffic (explicit model control loads and unloads them)."""
    kind = "KIND_GPU" if device == "gpu" else "KIND_CPU"
    lines = [
        f'name: "{name}"',
        f'backend: "{backend}"',
        f"max_batch_size: {MAX_BATCH_SIZE}",
    ]
    if backend == "onnxruntime":
        lines.append('default_model_filename: "model.onnx"')
    for section, tensors in (("input", inputs), ("output", outputs)):
        entries = ",\n".join(
            f'  {{ name: "{t.name}" data_type: {t.dtype} dims: [ {", ".join(map(str, t.dims))} ] }}'
            for t in tensors
        )
        lines.append(f"{section} [\n{entries}\n]")
    sizes = ", ".join(str(s) for s in PREFERRED_BATCH_SIZES)
    lines += [
        "dynamic_batching {",
        f"  preferred_batch_size: [ {sizes} ]",
        f"  max_queue_delay_microseconds: {QUEUE_DELAY_MICROSECONDS}",
        "}",
        f"instance_group [ {{ count: {instances} kind: {kind} }} ]",
        f"version_policy: {{ latest {{ num_versions: {versions_served} }} }}",
    ]
    return "\n".join(lines) + "\n"
