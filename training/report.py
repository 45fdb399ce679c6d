"""What a run tells as it goes: a line per epoch on the terminal, train_log.jsonl, and the
training curve (loss and validation NDCG@10 per epoch) as a PNG."""

import json
import math
from pathlib import Path

from tqdm import tqdm

from training.state import TrainerState


def log_epoch(record: dict, state: TrainerState, show: bool) -> None:
    if not show:
        return
    valid = record.get("valid", {})
    tqdm.write(
        f"epoch {record['epoch']:>3}  loss {record['loss']:.4f}  "
        f"valid ndcg@10 {valid.get('ndcg@10', math.nan):.4f}  "
        f"hr@10 {valid.get('hr@10', math.nan):.4f}  "
        f"best {state.best_ndcg:.4f} (epoch {state.best_epoch})  "
        f"{record['epoch_seconds']:.0f} s/epoch  {record['elapsed_seconds'] / 60:.1f} min"
    )


def append_log(path: Path, record: dict) -> None:
    """One JSON line per epoch; the file lives in the staging directory until the run ends."""
    with open(path, "a") as log:
        log.write(json.dumps(record) + "\n")


def plot_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (loss_axis, ndcg_axis) = plt.subplots(1, 2, figsize=(10, 3.5))
    loss_axis.plot(epochs, [r["loss"] for r in history])
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss")
    evaluated = [r for r in history if "valid" in r]
    ndcg_axis.plot([r["epoch"] for r in evaluated], [r["valid"]["ndcg@10"] for r in evaluated])
    ndcg_axis.set_xlabel("epoch")
    ndcg_axis.set_ylabel("validation NDCG@10")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
