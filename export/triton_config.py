"""Triton config.pbtxt text for the exported models (pure functions of their tensor specs)."""

from logitrec.repository import TRITON_MAX_BATCH_SIZE, VERSIONS_SERVED, Tensor

PREFERRED_BATCH_SIZES = (8, 16, 32)
# A GPU's time per call grows little with rows at these sizes, so fuller batches are worth a
# short wait (to be tuned from benchmarks/device/gpu_check.sh's measurements).
GPU_PREFERRED_BATCH_SIZES = (16, 32, 64)
QUEUE_DELAY_MICROSECONDS = 500
# TensorRT's scratch memory per engine (its own default, said explicitly).
TENSORRT_WORKSPACE_BYTES = 1 << 30


def config_text(
    name: str,
    inputs: list[Tensor],
    outputs: list[Tensor],
    *,
    backend: str,
    device: str,
    instances: int = 1,
    tensorrt: bool = False,
    precision: str = "fp32",
    widest: dict[str, int] | None = None,
) -> str:
    """config.pbtxt for one model. The newest VERSIONS_SERVED versions stay loaded so an old
    one drains while the new one takes traffic (explicit model control loads and unloads).

    `tensorrt` (GPU, native onnxruntime backend): TensorRT runs what it can of the graph, in
    fp16 only for an fp16 export (an fp32 one keeps the numbers its parity check measured);
    `widest` (input name -> largest size of its variable axis) gives TensorRT one optimisation
    profile for every batch, instead of an engine rebuilt per new shape."""
    gpu = device == "gpu"
    kind = "KIND_GPU" if gpu else "KIND_CPU"
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
    sizes = ", ".join(str(s) for s in (GPU_PREFERRED_BATCH_SIZES if gpu else PREFERRED_BATCH_SIZES))
    lines += [
        "dynamic_batching {",
        f"  preferred_batch_size: [ {sizes} ]",
        f"  max_queue_delay_microseconds: {QUEUE_DELAY_MICROSECONDS}",
        "}",
        f"instance_group [ {{ count: {instances} kind: {kind} }} ]",
        f"version_policy: {{ latest {{ num_versions: {VERSIONS_SERVED} }} }}",
    ]
    if tensorrt:
        lines += _tensorrt(inputs, precision, widest or {})
    return "\n".join(lines) + "\n"


def _tensorrt(inputs: list[Tensor], precision: str, widest: dict[str, int]) -> list[str]:
    parameters = {
        "precision_mode": "FP16" if precision == "fp16" else "FP32",
        "max_workspace_size_bytes": str(TENSORRT_WORKSPACE_BYTES),
        "trt_engine_cache_enable": "1",
    }
    profile = tensorrt_profile(inputs, widest)
    if profile:
        smallest, largest = profile
        parameters |= {
            "trt_profile_min_shapes": smallest,
            "trt_profile_opt_shapes": largest,
            "trt_profile_max_shapes": largest,
        }
    entries = "\n".join(
        f'      parameters {{ key: "{k}" value: "{v}" }}' for k, v in parameters.items()
    )
    return [
        "optimization { execution_accelerators {",
        "  gpu_execution_accelerator : [ {",
        '      name : "tensorrt"',
        entries,
        "  } ]",
        "} }",
    ]


def tensorrt_profile(inputs: list[Tensor], widest: dict[str, int]) -> tuple[str, str] | None:
    """(smallest, largest) shapes of every input, batch axis included ("items:1x1,..."), or
    None when some variable axis has no known bound (TensorRT then sizes engines per shape)."""
    smallest, largest = [], []
    for tensor in inputs:
        if -1 in tensor.dims and tensor.name not in widest:
            return None
        low = [1] + [1 if d == -1 else d for d in tensor.dims]
        high = [TRITON_MAX_BATCH_SIZE] + [
            widest.get(tensor.name) if d == -1 else d for d in tensor.dims
        ]
        smallest.append(f"{tensor.name}:{'x'.join(map(str, low))}")
        largest.append(f"{tensor.name}:{'x'.join(map(str, high))}")
    return ",".join(smallest), ",".join(largest)
