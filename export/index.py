"""The FAISS candidate index over the head rows, built in the MIPS-to-L2 space of
logitrec.mips (exact for ranking by logit = h . W_i + b_i when flat; IVF above FLAT_BELOW)."""

import math
from dataclasses import dataclass

import numpy as np

from logitrec.errors import InputError
from logitrec.mips import item_points

# Items; above this an IVF index is built (a flat scan of 50k x d stays within a few ms a batch).
FLAT_BELOW = 50_000


@dataclass(frozen=True)
class IndexInfo:
    factory: str
    max_norm: float
    gpu: bool

    def as_dict(self) -> dict:
        return {
            "factory": self.factory,
            "metric": "l2",
            "transform": "mips-to-l2",
            "max_norm": self.max_norm,
            "built_on_gpu": self.gpu,
            "query": "[h, 1, 0]",
        }


def default_factory(num_items: int) -> str:
    if num_items < FLAT_BELOW:
        return "Flat"
    return f"IVF{_nlist(num_items)},Flat"


def _nlist(num_items: int) -> int:
    # ~4 sqrt(N) lists, at least 39 training points per list as FAISS asks.
    return int(min(4 * math.sqrt(num_items), num_items // 39))


def build_index(weight: np.ndarray, bias: np.ndarray, factory: str | None = None):
    """(faiss index over the items' points, IndexInfo). Index id i is item index i + 1."""
    import faiss

    points, max_norm = item_points(weight, bias)
    factory = factory or default_factory(len(points))
    try:
        index = faiss.index_factory(points.shape[1], factory, faiss.METRIC_L2)
    except RuntimeError as error:
        raise InputError(f"--index: FAISS cannot build {factory!r} ({error})") from None
    on_gpu = _gpu_count(faiss) > 0
    if on_gpu:
        gpu_index = faiss.index_cpu_to_all_gpus(index)
        gpu_index.train(points)
        gpu_index.add(points)
        index = faiss.index_gpu_to_cpu(gpu_index)
    else:
        if not index.is_trained:
            if len(points) < 39:
                raise InputError(f"--index {factory}: {len(points)} items are too few to train it")
            index.train(points)
        index.add(points)
    # Its search breadth (IVF nprobe, HNSW efSearch) is chosen afterwards by export.calibrate.
    return index, IndexInfo(factory=factory, max_norm=max_norm, gpu=on_gpu)


def _gpu_count(faiss) -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
