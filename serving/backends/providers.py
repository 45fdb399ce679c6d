"""Which ONNX Runtime execution providers the embedded backend's sessions get, from --device
and --tensorrt (pure: the caller passes what the installed onnxruntime offers)."""

from collections.abc import Sequence
from dataclasses import dataclass

from logitrec.errors import InputError
from serving.config import DEVICES

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)
INSTALL_HINT = "install the gpu extra with onnxruntime-gpu alone (docs/gpu.md)"


@dataclass(frozen=True)
class Provider:
    name: str
    options: dict

    @property
    def on_gpu(self) -> bool:
        return self.name in GPU_PROVIDERS


def choose_providers(
    device: str,
    available: Sequence[str],
    *,
    tensorrt: bool = False,
    device_id: int = 0,
    tensorrt_options: dict | None = None,
) -> list[Provider]:
    """The providers to ask for, best first. CPU always comes last: ONNX Runtime places any
    node the GPU providers cannot run there. auto takes CUDA when the installed onnxruntime
    has it; cuda and tensorrt, asked for explicitly, are refused when it has not."""
    if device not in DEVICES:
        raise InputError(f"--device: expected one of {', '.join(DEVICES)}, got {device!r}")
    if tensorrt and device == "cpu":
        raise InputError("--tensorrt runs on the GPU: use it with --device cuda (or auto)")
    listed = ", ".join(available) or "none"
    if CUDA not in available:
        if device == "cuda" or tensorrt:
            flag = "--tensorrt" if tensorrt and device != "cuda" else "--device cuda"
            raise InputError(
                f"{flag}: the installed onnxruntime has no CUDA execution provider "
                f"(available: {listed}); {INSTALL_HINT}"
            )
        return [Provider(CPU, {})]
    if device == "cpu":
        return [Provider(CPU, {})]
    chosen = [Provider(CUDA, {"device_id": device_id}), Provider(CPU, {})]
    if tensorrt:
        if TENSORRT not in available:
            raise InputError(
                f"--tensorrt: the installed onnxruntime has no TensorRT execution provider "
                f"(available: {listed}); drop --tensorrt or use an onnxruntime-gpu build with it"
            )
        options = {"device_id": device_id, **(tensorrt_options or {})}
        chosen.insert(0, Provider(TENSORRT, options))
    return chosen


def check_active(chosen: Sequence[Provider], active: Sequence[str]) -> None:
    """ONNX Runtime falls back to the CPU with only a log line when a GPU provider's libraries
    (CUDA, cuDNN, TensorRT) fail to load: refuse that instead of serving slowly on the CPU."""
    missing = [p.name for p in chosen if p.on_gpu and p.name not in active]
    if missing:
        raise InputError(
            f"{', '.join(missing)} could not start (active: {', '.join(active)}): its CUDA, "
            "cuDNN or TensorRT libraries did not load (ONNX Runtime's log names the missing "
            f"one); check the driver and the libraries, or use --device cpu"
        )


def tensorrt_options(
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]], cache_dir: str, fp16: bool
) -> dict:
    """TensorRT execution provider options for one graph: input name -> (smallest, largest)
    shape as an explicit optimisation profile (without one, every batch of a new width,
    history length or candidate count, rebuilds the engine, seconds each), the engine cached in
    `cache_dir` (a restart does not rebuild it), fp16 kernels for an fp16 export only (an fp32
    one is served with the numbers its parity check measured)."""

    def listing(which: int) -> str:
        return ",".join(f"{n}:{'x'.join(map(str, s[which]))}" for n, s in shapes.items())

    return {
        "trt_profile_min_shapes": listing(0),
        "trt_profile_opt_shapes": listing(1),
        "trt_profile_max_shapes": listing(1),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache_dir,
        "trt_fp16_enable": "True" if fp16 else "False",
    }
