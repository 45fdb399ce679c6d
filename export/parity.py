"""Parity of the exported ONNX graphs with the PyTorch model, on real histories.

fp32: fails when any logit differs by more than LOGIT_TOLERANCE or any user's top-10 differs.
fp16: fails when any logit differs by more than FP16_RELATIVE_TOLERANCE of the largest |logit|,
or a user's top-10 holds an item that is not within that tolerance of the true top-10 (fp16
may reorder near-ties, nothing else).
"""

import importlib.metadata
from pathlib import Path

import numpy as np
import torch

from logitrec.errors import InputError
from logitrec.mips import search
from logitrec.repository import CANDIDATES, CONTEXT, ITEMS, MODEL_FILE, USER_VECTOR, K

LOGIT_TOLERANCE = 1e-4  # fp32
# fp16 (export --precision fp16), relative to the largest |logit| of the check: fp16 keeps 11
# significant bits (a rounding step of 2^-11 = 4.9e-4 of a value). Measured on CPU ONNX Runtime
# (benchmarks/results/fp16_parity.md): the ML-1M demo model's worst logit over 2,830 query
# states is off by 5.2e-4 of the largest |logit|; 5e-3 leaves about 10x room for other kernels
# (GPU tensor cores sum in another order) while a real bug (a wrong weight, a dropped bias, an
# fp16 overflow) is off by far more.
FP16_RELATIVE_TOLERANCE = 5e-3
TOP = 10
SAMPLE_USERS = 64
SCORER_ITEMS = 4096  # larger catalogs: the scorer is checked on a sample (scorer_candidates)
TOP_CHECKED = 100


class ParityFailed(InputError):
    def __init__(self, results: dict) -> None:
        self.results = results
        super().__init__(
            f"parity check failed: ONNX Runtime ({results.get('precision', 'fp32')}) disagrees "
            f"with PyTorch (max logit difference {results['max_abs_logit_diff']:.3g}, tolerance "
            f"{results['tolerance']:.3g}; top-{TOP} {_agreement(results)} of {results['users']} "
            "users); nothing was installed"
        )


def versions() -> dict:
    names = (
        "torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "faiss-cpu",
        "faiss-gpu-cu12", "logitrec",
    )  # fmt: skip
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def encoder_feed(histories: np.ndarray, context: np.ndarray) -> dict:
    feed = {ITEMS: histories.astype(np.int64)}
    if context.shape[1]:
        feed[CONTEXT] = context.astype(np.int64)
    return feed


def scorer_candidates(expected: np.ndarray) -> np.ndarray:
    """What the scorer is checked on: every item for catalogs up to SCORER_ITEMS; beyond, each
    user's expected top TOP_CHECKED and a fixed random sample (a [users, catalog] candidate
    matrix would gather users x catalog x d floats: 16 GB at 1M items)."""
    users, num_items = expected.shape
    if num_items <= SCORER_ITEMS:
        return np.tile(np.arange(1, num_items + 1, dtype=np.int64), (users, 1))
    sample = np.random.default_rng(0).choice(num_items, SCORER_ITEMS, replace=False) + 1
    best = np.argpartition(-expected, TOP_CHECKED - 1, axis=1)[:, :TOP_CHECKED] + 1
    rows = [np.unique(np.concatenate([top, sample])) for top in best]
    out = np.zeros((users, max(len(r) for r in rows)), dtype=np.int64)  # 0: padding
    for row, values in zip(out, rows, strict=True):
        row[: len(values)] = values
    return out


def check(
    model, folders: dict[str, Path], histories, context, *, index=None, precision: str = "fp32"
) -> dict:
    """Compare encoder + scorer and top-k graphs with the model; FAISS recall for the record.
    `precision`: what the graphs were exported in (the fp32 PyTorch model is the reference)."""
    with torch.no_grad():
        ctx = torch.as_tensor(context) if context.shape[1] else None
        expected_vectors = model.user_vectors(torch.as_tensor(histories), ctx).numpy()
        expected = model.logits(torch.as_tensor(expected_vectors)).numpy()

    encoder = session(folders["encoder"] / MODEL_FILE)
    (vectors,) = encoder.run(None, encoder_feed(histories, context))
    # The same histories without their all-padding columns: the length axis is truly dynamic.
    first = int((histories != 0).any(axis=0).argmax())
    (trimmed_vectors,) = encoder.run(None, encoder_feed(histories[:, first:], context))

    scorer = session(folders["scorer"] / MODEL_FILE)
    candidates = scorer_candidates(expected)
    (logits,) = scorer.run(None, {USER_VECTOR: vectors, CANDIDATES: candidates})
    # The expected logits at the same candidates; padding (0) scores -inf on both sides.
    padding = candidates == 0
    expected_at = np.where(padding, -np.inf, np.take_along_axis(expected, candidates - 1, 1))
    logits = np.where(padding, -np.inf, logits)

    topk = session(folders["topk"] / MODEL_FILE)
    feed = encoder_feed(histories, context)
    feed[K] = np.full((len(histories), 1), TOP, dtype=np.int64)
    top_logits, top_items = topk.run(None, feed)

    expected_top = np.argsort(-expected, axis=1, kind="stable")[:, :TOP] + 1
    onnx_order = np.argsort(-logits, axis=1, kind="stable")[:, :TOP]
    onnx_top = np.take_along_axis(candidates, onnx_order, 1)
    identical = int((expected_top == onnx_top).all(axis=1).sum())
    topk_identical = int((expected_top == top_items).all(axis=1).sum())
    differences = {
        "encoder": float(np.abs(vectors - expected_vectors).max()),
        "encoder_trimmed_length": float(np.abs(trimmed_vectors - expected_vectors).max()),
        "scorer_logits": float(np.abs(logits - expected_at)[~padding].max()),
        "topk_logits": float(
            np.abs(top_logits - np.take_along_axis(expected, expected_top - 1, 1)).max()
        ),
    }
    worst_logit = max(differences["scorer_logits"], differences["topk_logits"])
    tolerance = logit_tolerance(precision, expected)
    results = {
        "precision": precision,
        "users": len(histories),
        "history_length": int(histories.shape[1]),
        "max_abs_diff": differences,
        "max_abs_logit_diff": worst_logit,
        "tolerance": tolerance,
        "top10_identical_users": min(identical, topk_identical),
        "top10_overlap": min(overlap(expected_top, onnx_top), overlap(expected_top, top_items)),
    }
    if precision == "fp16":
        results["relative_tolerance"] = FP16_RELATIVE_TOLERANCE
        within = min(
            near_ties_only(expected, onnx_top, tolerance),
            near_ties_only(expected, top_items, tolerance),
        )
        results["top10_within_tolerance_users"] = within
        results["passed"] = bool(worst_logit <= tolerance and within == len(histories))
    else:
        results["passed"] = bool(
            worst_logit <= tolerance
            and identical == len(histories)
            and topk_identical == len(histories)
        )
    if index is not None:
        found = search(index, vectors, TOP)
        hits = [len(set(a) & set(b)) for a, b in zip(found, expected_top, strict=True)]
        results["faiss_recall@10"] = float(np.mean(hits) / TOP)
    return results


def logit_tolerance(precision: str, expected: np.ndarray) -> float:
    """The largest logit difference a `precision` export may show (absolute)."""
    if precision == "fp16":
        return FP16_RELATIVE_TOLERANCE * float(np.abs(expected).max())
    return LOGIT_TOLERANCE


def overlap(expected_top: np.ndarray, found_top: np.ndarray) -> float:
    """Mean share of each user's true top-10 that the graph's top-10 holds."""
    shared = [len(set(a) & set(b)) for a, b in zip(expected_top, found_top, strict=True)]
    return float(np.mean(shared) / expected_top.shape[1])


def near_ties_only(expected: np.ndarray, found_top: np.ndarray, tolerance: float) -> int:
    """Users whose top-10 holds only items whose true logit is within 2 x tolerance of their
    true 10th best: the two sides each round by up to `tolerance`, so such items can swap
    places; an item further down cannot enter the top-10 by rounding."""
    tenth = -np.partition(-expected, TOP - 1, axis=1)[:, TOP - 1]
    true_logits = np.take_along_axis(expected, found_top - 1, 1)
    return int((true_logits >= (tenth - 2 * tolerance)[:, None]).all(axis=1).sum())


def _agreement(results: dict) -> str:
    if results.get("precision") == "fp16":
        return f"within tolerance for {results['top10_within_tolerance_users']}"
    return f"identical for {results['top10_identical_users']}"
