"""Triton config.pbtxt text for the exported models (pure functions of their tensor specs)."""

from logitrec.repository import TRITON_MAX_BATCH_SIZE, VERSIONS_SERVED, Tensor

PREFERRED_BATCH_SIZES = (8, 16, 32)
QUEUE_DELAY_MICROSECONDS = 500


def config_text(
    name: str,
    inputs: list[Tensor],
    outputs: list[Tensor],
    *,
    backend: str,
    device: str,
    instances: int = 1,
) -> str:
    """config.pbtxt for one model. The newest VERSIONS_SERVED versions stay loaded so an old
    one drains while the new one takes traffic (explicit model control loads and unloads)."""
    kind = "KIND_GPU" if device == "gpu" else "KIND_CPU"
    lines = [
        f'name: "{name}"',
        f'backend: "{backend}"',
        f"max_batch_size: {TRITON_MAX_BATCH_SIZE}",
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
        f"version_policy: {{ latest {{ num_versions: {VERSIONS_SERVED} }} }}",
    ]
    return "\n".join(lines) + "\n"
