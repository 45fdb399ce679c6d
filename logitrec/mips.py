"""Ranking by logit as a nearest-neighbour search: the transform FAISS indexes are built and
queried with, shared by export (which builds the index) and the gateway (which searches it).

The bias is folded in and inner products are turned into distances (the "MIPS-to-L2" transform):
item i becomes x_i = [W_i, b_i, sqrt(M^2 - |[W_i, b_i]|^2)] with M the largest such norm, and a
query h becomes q = [h, 1, 0]. Then |q - x_i|^2 = |q|^2 + M^2 - 2 (h . W_i + b_i): the nearest
items by L2 are the highest logits. One L2 code path therefore serves every index type (flat is
exact; IVF and HNSW approximate), and the gateway re-scores the candidates exactly anyway.
"""

import math

import numpy as np


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


def search(index, user_vectors: np.ndarray, count: int) -> np.ndarray:
    """The `count` best item indices (from 1) per user vector; 0 where fewer exist.

    Index id i is item index i + 1: the index holds real items only, in index order.
    """
    _, ids = index.search(query_points(user_vectors), count)
    return np.where(ids >= 0, ids + 1, 0)


def search_parameter(index) -> str | None:
    """The setting that trades speed for recall in `index`: "nprobe" (IVF: lists scanned per
    query), "efSearch" (HNSW: candidates kept while walking the graph), or None (exact)."""
    import faiss

    try:
        faiss.extract_index_ivf(index)
        return "nprobe"
    except (RuntimeError, AttributeError):
        pass
    return "efSearch" if hasattr(faiss.downcast_index(index), "hnsw") else None


def set_search_parameter(index, name: str, value: int) -> None:
    import faiss

    faiss.ParameterSpace().set_index_parameter(index, name, int(value))
