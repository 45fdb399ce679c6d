"""Named starting points for training settings: `ml-1m` (the defaults, tuned on MovieLens-1M)
and `auto` (derived from the dataset's own statistics by `auto_recipe`).

A recipe is the first layer of a run's settings; a `--config` TOML file and command-line flags
override it. The checkpoint's config.json records the recipe's name with the settings it
resolved to, so the checkpoint rebuilds the same model whatever the recipes become.
"""

import math

from logitrec.errors import InputError

ML_1M = "ml-1m"
AUTO = "auto"
RECIPES = (ML_1M, AUTO)
# The recipe a run starts from unless told otherwise. Measured against auto on three more
# datasets (benchmarks/recipes.py), auto won on one (Scientific) and lost on another
# (Instruments, short budget): ml-1m stays the default.
DEFAULT_RECIPE = ML_1M

# ML-1M anchors the rules of `auto_recipe`: today's defaults were tuned on it. SASRec's copy has
# 6,040 users, 3,416 items, 999,611 interactions (density 4.8%), history lengths p90 400 and
# ~981k training transitions: ~7,900 windows of 200, ~62 optimizer steps per epoch at batch 128.
ANCHOR_BATCH = 128
ANCHOR_LEARNING_RATE = 3e-3
COSINE_STEPS = 12_500  # ML-1M's 200 epochs of ~62 steps
PATIENCE_STEPS = 1_900  # ML-1M's 30 epochs of patience
# What `auto_recipe` sets; everything else keeps ml-1m's value.
AUTO_SETTINGS = (
    "max_length",
    "dropout",
    "weight_decay",
    "batch_size",
    "learning_rate",
    "warmup_steps",
    "schedule",
    "epochs",
    "patience",
    "windows",
)
# Densities between which regularization rises from ML-1M's to its most (Amazon-like).
DENSE, SPARSE = 1e-2, 1e-3
# Training transitions between which a small dataset's regularization rises the same way.
LARGE, SMALL = 200_000, 20_000


def resolve_recipe(name: str | None) -> str:
    """A recipe's canonical name (`default` and None: DEFAULT_RECIPE)."""
    if name is None or name == "default":
        return DEFAULT_RECIPE
    if name not in RECIPES:
        raise InputError(f"--recipe: expected auto, ml-1m or default, got {name!r}")
    return name


def recipe_settings(name: str, stats: dict | None) -> dict:
    """The settings `name` sets, by their flag names (model settings among them): none for
    ml-1m (the defaults are that recipe), `auto_recipe(stats)` for auto."""
    if name == ML_1M:
        return {}
    if stats is None:
        raise InputError("--recipe auto: needs the dataset's statistics (give --data)")
    return auto_recipe(stats)


def auto_recipe(stats: dict) -> dict:
    """Settings for a dataset from its statistics (`dataset_stats`), ML-1M's defaults where
    the statistics look like ML-1M's. The rules, and why:

    - max_length: the 90th percentile of history lengths, rounded up to a multiple of 10,
      within [20, 200]. A window that holds nine users in ten whole wastes no attention on
      padding, and the rest still train on all their items (windows "all" cuts long histories
      into several). ML-1M: 200.
    - dropout 0.2 -> 0.5 and weight_decay 0 -> 0.05, by sparsity: 0 at density >= 1% and
      >= 200k training transitions, 1 at density <= 0.1% or <= 20k transitions (log scale,
      the larger of the two). Items seen a handful of times and small datasets overfit first;
      SASRec used 0.2 on ML-1M and 0.5 on the Amazon sets. ML-1M: 0.2 and 0.
    - batch_size: 128 (ML-1M's), 64 under 4,000 training windows (an epoch of a small dataset
      still takes enough steps), 256 over 100,000 (bigger steps use the hardware better), with
      learning_rate scaled by sqrt(batch / 128) from ML-1M's 3e-3 (Adam's usual rule).
    - warmup_steps: about one epoch of steps, within [20, 500]. ML-1M: 60 (its default, 50,
      is ~0.8 epoch).
    - epochs: the cosine's length, about 12,500 steps as on ML-1M (200 epochs), within
      [20, 400]; patience: about 1,900 steps without a better validation NDCG@10 (ML-1M's 30
      epochs), within [5, 30]. Early stopping, not a minute budget, ends the run: a large
      dataset learns more per epoch and its validation is steadier, so it needs fewer of both.
    - windows "all", hidden_size 64, two layers, two heads: ML-1M's, measured best per minute
      there; `logitrec tune` searches hidden_size.
    """
    users = stats["users"]
    split = stats["split"]
    transitions = max(1, split["train_interactions"] - split["train_users"])
    max_length = _clamp(10 * math.ceil(stats["sequence_length"]["p90"] / 10), 20, 200)
    sparsity = max(
        _log_share(stats["density"], DENSE, SPARSE), _log_share(transitions, LARGE, SMALL)
    )
    # Each user has one window, and a long history one more per max_length transitions (half
    # a window short on average).
    windows = max(users, users / 2 + transitions / max_length)
    batch_size = 64 if windows < 4_000 else 256 if windows > 100_000 else ANCHOR_BATCH
    steps = max(1.0, windows / batch_size)
    return {
        "max_length": max_length,
        "dropout": round(round(20 * (0.2 + 0.3 * sparsity)) / 20, 2),  # steps of 0.05
        "weight_decay": round(0.05 * sparsity, 3),
        "batch_size": batch_size,
        "learning_rate": float(f"{ANCHOR_LEARNING_RATE * math.sqrt(batch_size / 128):.2g}"),
        "warmup_steps": _clamp(10 * round(steps / 10), 20, 500),
        "schedule": "cosine",
        "epochs": _clamp(10 * round(COSINE_STEPS / steps / 10), 20, 400),
        "patience": _clamp(round(PATIENCE_STEPS / steps), 5, 30),
        "windows": "all",
    }


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, int(value)))


def _log_share(value: float, start: float, end: float) -> float:
    """Where `value` lies from `start` (0) to `end` (1) on a log scale, clipped to [0, 1]."""
    if value <= 0:
        return 1.0
    share = math.log(start / value) / math.log(start / end)
    return max(0.0, min(1.0, share))
