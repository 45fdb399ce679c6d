"""Where the gateway's FAISS index searches: the CPU, or a GPU copy when --device asks for one
(auto: when the installed faiss has GPU support and sees a GPU; cuda: required).

A GPU index answers at most GPU_MAX_K neighbours per query and scans at most GPU_MAX_K IVF
lists, and FAISS's GPU code has no HNSW: those searches stay on the CPU copy, which is kept.
"""

import logging
import threading
from dataclasses import dataclass

from logitrec.errors import InputError

log = logging.getLogger("logitrec.gateway")
# FAISS's GPU k-selection limit (GPU_MAX_SELECTION_K in faiss/gpu/utils/DeviceDefs.cuh): the
# most neighbours per query, and the most IVF lists probed, a GPU index takes.
GPU_MAX_K = 2048
GPU_KINDS = ("flat", "ivf")  # what index_cpu_to_gpu copies for the indexes export builds


@dataclass(frozen=True)
class Placement:
    on_gpu: bool
    reason: str  # said in the log either way


def placement(device: str, gpus: int, kind: str, nprobe: int | None = None) -> Placement:
    """Pure: where an index of `kind` ("flat", "ivf", "hnsw", ...) searches, given --device
    and the GPUs the installed faiss sees (0 for faiss-cpu). InputError when --device cuda
    cannot be honoured at all."""
    if device == "cpu":
        return Placement(False, "--device cpu")
    if gpus == 0:
        if device == "cuda":
            raise InputError(
                "--device cuda: the installed faiss has no GPU support or sees no GPU "
                "(faiss-cpu?); install the gpu extra's faiss-gpu-cu12 alone (docs/gpu.md), "
                "or use --device auto to search on the CPU"
            )
        return Placement(False, "no GPU faiss installed")
    if kind == "shards":
        return Placement(False, "--index-shards: sharded indexes search on the CPU")
    if kind not in GPU_KINDS:
        return Placement(False, f"FAISS has no GPU version of a {kind} index")
    if nprobe is not None and nprobe > GPU_MAX_K:
        return Placement(False, f"nprobe {nprobe} is over the GPU's limit of {GPU_MAX_K}")
    return Placement(True, f"--device {device}")


class GpuSearch:
    """A GPU copy of an index, searched for up to GPU_MAX_K neighbours; wider searches (a
    candidate count plus exclusions beyond it) use the CPU index. A GPU index is not safe to
    search from two threads at once (the gateway may run two batches), hence the lock."""

    def __init__(self, cpu_index, gpu_index) -> None:
        self.cpu_index = cpu_index
        self.gpu_index = gpu_index
        self.ntotal = cpu_index.ntotal
        self._lock = threading.Lock()

    def search(self, points, count: int):
        if count > GPU_MAX_K:
            return self.cpu_index.search(points, count)
        with self._lock:
            return self.gpu_index.search(points, count)


_resources = None  # one StandardGpuResources per process: it reserves scratch memory


def gpu_count() -> int:
    """GPUs the installed faiss can use (0 with faiss-cpu)."""
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def check_device(device: str) -> None:
    """At start: InputError when --device cuda cannot put any index on a GPU."""
    if device == "cuda":
        placement(device, gpu_count(), "flat")


def place_index(index, device: str):
    """The index to search: `index` itself, or a GpuSearch over a GPU copy of it."""
    import faiss

    kind, nprobe = _kind(faiss, index)
    where = placement(device, gpu_count(), kind, nprobe)
    if not where.on_gpu:
        if device != "cpu":
            log.info("FAISS index (%s) searches on the CPU: %s", kind, where.reason)
        return index
    global _resources
    if _resources is None:
        _resources = faiss.StandardGpuResources()
    try:
        gpu_index = faiss.index_cpu_to_gpu(_resources, 0, index)  # nprobe comes along
    except RuntimeError as error:  # a code the GPU lacks (e.g. 4-bit fast-scan PQ)
        reason = (str(error).splitlines() or ["?"])[0][:160]
        log.warning("FAISS index (%s) stays on the CPU: no GPU copy (%s)", kind, reason)
        return index
    log.info("FAISS index (%s, %d items) searches on GPU 0", kind, index.ntotal)
    return GpuSearch(index, gpu_index)


def _kind(faiss, index) -> tuple[str, int | None]:
    try:
        ivf = faiss.extract_index_ivf(index)
        return "ivf", int(ivf.nprobe)
    except (RuntimeError, AttributeError):
        pass
    plain = faiss.downcast_index(index)
    if isinstance(plain, faiss.IndexShards):
        return "shards", None
    if hasattr(plain, "hnsw"):
        return "hnsw", None
    return ("flat" if isinstance(plain, faiss.IndexFlat) else type(plain).__name__), None
