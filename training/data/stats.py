"""Summary statistics of a prepared dataset, as one JSON-ready dict."""

import numpy as np

from training.data.dataset import Dataset

PERCENTILES = (5, 25, 50, 75, 90, 95, 99)


def dataset_stats(dataset: Dataset) -> dict:
    lengths = dataset.lengths
    split = dataset.split
    interactions = int(lengths.sum())
    return {
        "path": str(dataset.path),
        "users": dataset.num_users,
        "items": dataset.num_items,
        "interactions": interactions,
        "density": round(interactions / max(1, dataset.num_users * dataset.num_items), 6),
        "sequence_length": {
            "min": int(lengths.min()),
            "mean": round(float(lengths.mean()), 2),
            "max": int(lengths.max()),
            **{f"p{p}": round(float(np.percentile(lengths, p)), 2) for p in PERCENTILES},
        },
        "split": {
            "kind": dataset.manifest["split"]["kind"],
            "train_users": int((split.train_end > 0).sum()),
            "train_interactions": int(split.train_end.sum()),
            "valid_targets": int((split.valid_position >= 0).sum()),
            "test_targets": int((split.test_position >= 0).sum()),
            "cutoffs": split.cutoffs,
        },
        "ordering": dataset.manifest.get("ordering"),
        "content_hash": dataset.manifest.get("content_hash"),
    }
