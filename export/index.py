"""FAISS candidate index over the head rows, exact for ranking by logit = h . W_i + b_i.

The bias is folded in and inner products are turned into distances (the "MIPS-to-L2" transform):
item i becomes x_i = [W_i, b_i, sqrt(M^2 - |[W_i, b_i]|^2)] with M the largest such norm, and a
query h becomes q = [h, 1, 0]. Then |q - x_i|^2 = |q|^2 + M^2 - 2 (h . W_i + b_i): the nearest
items by L2 are the highest logits. One L2 code path therefore serves every index type (flat is
exact; IVF and HNSW approximate), and the gateway re-scores the candidates exactly anyway.
"""

import math
from dataclasses import dataclass

import numpy as np

from logitrec.errors import InputError

FLAT_BELOW = 50_000  # items; above this an IVF index is built (DESIGN.md: pruning measurements)


@dataclass(frozen=True)
class IndexInfo:
    factory: str
    max_norm: float
    nprobe: int | None
    gpu: bool

    def as_dict(self) -> dict:
        return {
            "factory": self.factory,
            "metric": "l2",
            "transform": "mips-to-l2",
            "max_norm": self.max_norm,
            "nprobe": self.nprobe,
            "built_on_gpu": self.gpu,
            "query": "[h, 1, 0]",
        }


def item_points(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, float]:
    """Rows [W_i, b_i, sqrt(M^2 - |.|^2)] for real items (no padding row), and M."""
    augmented = np.concatenate([weight, bias[:, None]], axis=1).astype(np.float64)
    norms = np.square(augmented).sum(axis=1)
    max_norm = float(math.sqrt(norms.max())) if len(norms) else 0.0
    extra = np.sqrt(np.maximum(max_norm**2 - norms, 0.0))[:, None]
    return np.ascontiguousarray(np.concatenate([augmented, extra], 1), dtype=np.float32), max_norm


def query_points(user_vectors: np.ndarray) -> np.ndarray:
    """Queries [h, 1, 0] for user vectors h [B, d]."""
    rows = len(user_vectors)
    ones, zeros = np.ones((rows, 1), np.float32), np.zeros((rows, 1), np.float32)
    return np.ascontiguousarray(np.concatenate([user_vectors, ones, zeros], 1), dtype=np.float32)


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
    nprobe = None
    ivf = _ivf(faiss, index)
    if ivf is not None:
        # A starting point that measured recall@10 >= 0.99 on clustered catalogs; the gateway may
        # override it per deployment.
        nprobe = max(1, ivf.nlist // 40)
        ivf.nprobe = nprobe
    return index, IndexInfo(factory=factory, max_norm=max_norm, nprobe=nprobe, gpu=on_gpu)


def _gpu_count(faiss) -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def _ivf(faiss, index):
    try:
        return faiss.extract_index_ivf(index)
    except (RuntimeError, AttributeError):
        return None


def search(index, user_vectors: np.ndarray, count: int) -> np.ndarray:
    """The `count` best item indices (from 1) per user vector; 0 where fewer exist."""
    _, ids = index.search(query_points(user_vectors), count)
    return np.where(ids >= 0, ids + 1, 0)
