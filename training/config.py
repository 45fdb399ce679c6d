"""Training configuration: frozen dataclasses from a recipe, one TOML file over it, and the
CLI over both."""

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from logitrec.errors import InputError
from training.recipes import DEFAULT_RECIPE, RECIPES, recipe_settings, resolve_recipe

AUTO = "auto"
BACKBONES = ("scratch", "minilm")  # or a path to a local Hugging Face model directory
LOSSES = ("ce", "bce", "sampled-softmax")
SAMPLINGS = ("auto", "uniform", "popularity")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """What the model looks like. Sizes apply to `scratch`; a pretrained backbone brings its own."""

    backbone: str = "scratch"
    max_length: int = 200  # items of history the model reads
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    ffn_size: int | None = None  # feed-forward width (scratch); None: hidden_size, as in SASRec
    dropout: float = 0.2
    # Dropout on the attention weights (scratch). None: the same as `dropout`.
    attention_dropout: float | None = None
    # Use the head's item vectors as the input item embeddings too (SASRec does).
    tie_weights: bool = True
    # Add a projection of each item's title embedding (computed by the pretrained MiniLM) to its
    # id embedding. None: on for pretrained backbones, off for scratch.
    item_text: bool | None = None
    # With item text: the probability, per item and training step, that an item is read from
    # its title projection alone (its id embedding left out). It teaches the projection to
    # stand for items training never saw, which is what new items get (cold start).
    item_id_dropout: float = 0.0
    # User context columns of the dataset's users table to feed as prefix tokens. "auto": every
    # column with 2 to 100 distinct values (ML-1M: gender, age, occupation; zip codes are left
    # out); on ML-1M it measured +0.0087 and +0.0006 test NDCG@10 (seeds 42 and 7, GPU sweep);
    # () for none.
    context_features: tuple[str, ...] | str = "auto"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train: optimisation, schedule, stopping, hardware."""

    model: ModelConfig = field(default_factory=ModelConfig)
    # The recipe the settings started from (training/recipes.py); the defaults below are ml-1m.
    recipe: str = DEFAULT_RECIPE
    epochs: int = 200
    max_minutes: float | None = None  # stop (keeping the best epoch) after this wall time
    batch_size: int = 128
    # "all": train on the whole of every history, cut into windows of max_length going back
    # in time; "newest": each user's newest window only (SASRec's choice). On ML-1M the newest
    # windows hold 66% of the training transitions; "all" took the 60-minute CPU run from test
    # NDCG@10 0.1746 to 0.1807 with 30% fewer epochs (benchmarks/results/quality.md).
    windows: str = "all"  # all | newest
    # New parameters (item tables, head, scratch backbone). None: 3e-3 for scratch (escapes the
    # popularity plateau within ~5 epochs on ML-1M, where 1e-3 sat on it), 1e-3 beside a
    # pretrained encoder (3e-3 measured worse there).
    learning_rate: float | None = None
    encoder_learning_rate: float = 5e-5  # pretrained backbone weights
    weight_decay: float = 0.0
    warmup_steps: int = 50
    schedule: str = "cosine"  # cosine | constant (after warm-up)
    grad_clip: float = 1.0
    # Validate and keep an exponential moving average of the weights (decay per step); 0: off.
    ema_decay: float = 0.0
    loss: str = "ce"
    negatives: int = 256  # for bce and sampled-softmax
    # Where the sampled losses draw negatives from: uniform, popularity (training targets,
    # add-one smoothed) or auto (popularity for sampled-softmax, uniform for bce).
    negative_sampling: str = "auto"
    # Sampled softmax: subtract log(expected count) from each negative's logit (the log-Q
    # correction), so the sampled loss estimates the full softmax without the sampler's bias.
    logq_correction: bool = True
    # The sampled losses also take the batch's targets (up to `negatives` of them) as negatives.
    in_batch_negatives: bool = False
    # Item tables learn from sparse row gradients (row-wise Adam on the rows a batch touched,
    # AdamW on the rest). None: on for bce and sampled-softmax in one process (ce touches every
    # row anyway; under torchrun DDP all-reduces dense gradients). At 983k items it measured
    # several times faster per step (benchmarks/results/training_scale.md).
    sparse_rows: bool | None = None
    patience: int = 30  # epochs without a better validation NDCG@10 before stopping
    eval_every: int = 1
    # Validate on a fixed random subset of this many users (None: all of them), and with
    # `train_valid_items` let every other user train on their validation item (the transition
    # just before the test target; HSTU's protocol trains on it for every user, SASRec's for
    # none). The test split is untouched either way. Off by default: on ML-1M (1000 users
    # validated, 5040 items more to train on) the 60-minute run measured test NDCG@10 0.1795,
    # inside the 0.1777-0.1826 that four seeds measured without it.
    valid_users: int | None = None
    train_valid_items: bool = False
    # Incremental runs (--incremental): windows of already-learned transitions replayed per
    # window of new ones, against forgetting.
    replay_ratio: float = 1.0
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # CPU threads (None: all cores)
    amp: bool = True  # bf16 autocast where the device supports it (CUDA)


def _names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


def _check_names(cls, values: dict, where: str) -> None:
    unknown = set(values) - _names(cls)
    if unknown:
        raise InputError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")


def _model_value(name: str, value):
    if name == "context_features" and value != AUTO:
        return tuple(value)
    return value


def _apply_table(config: TrainConfig, table: dict, where: str) -> TrainConfig:
    """`config` with a TOML [train] table's settings (its `model` table: [train.model])."""
    _check_names(TrainConfig, table, where)
    model_table = table.get("model", {})
    if not isinstance(model_table, dict):
        raise InputError(f"{where}: model: expected a table ([train.model])")
    _check_names(ModelConfig, model_table, f"{where}.model")
    model = replace(
        config.model, **{name: _model_value(name, v) for name, v in model_table.items()}
    )
    settings = {name: value for name, value in table.items() if name != "model"}
    return replace(config, model=model, **settings)


def _apply_flat(config: TrainConfig, values: dict) -> TrainConfig:
    """`config` with settings by their flag names, model settings among them."""
    model_names = _names(ModelConfig)
    model = {k: _model_value(k, v) for k, v in values.items() if k in model_names}
    rest = {k: v for k, v in values.items() if k not in model_names}
    return replace(config, model=replace(config.model, **model), **rest)


def with_overrides(config: TrainConfig, values: dict) -> TrainConfig:
    """`config` with settings by their flag names (model settings among them), checked."""
    model_names = _names(ModelConfig)
    _check_names(TrainConfig, {k: v for k, v in values.items() if k not in model_names}, "settings")
    changed = _apply_flat(config, values)
    validate(changed)
    return changed


def read_table(path: Path | None) -> dict:
    """A TOML file's [train] table (a file without one is read as that table itself)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{path}: not valid TOML ({error})") from None
    return document.get("train", document)


def load_config(
    path: Path | None, overrides: dict | None = None, *, stats: dict | None = None
) -> TrainConfig:
    """The recipe's settings <- the TOML file's [train] and [train.model] tables <- CLI
    overrides (None: not given). The recipe is named by the overrides, else the file, else
    it is the default; `stats` (training/data/stats.py) is what `auto` derives settings from."""
    table = read_table(path)
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    recipe = resolve_recipe(given.pop("recipe", None) or table.get("recipe"))
    config = _apply_flat(TrainConfig(recipe=recipe), recipe_settings(recipe, stats))
    config = _apply_table(config, {**table, "recipe": recipe}, str(path))
    return with_overrides(config, given)


def validate(config: TrainConfig) -> None:
    model = config.model
    if config.recipe not in RECIPES:
        raise InputError(f"recipe: expected one of {', '.join(RECIPES)}, got {config.recipe!r}")
    if model.backbone not in BACKBONES and not Path(model.backbone).is_dir():
        raise InputError(
            f"--backbone: expected {', '.join(BACKBONES)} or a local model directory, "
            f"got {model.backbone!r}"
        )
    if config.loss not in LOSSES:
        raise InputError(f"--loss: expected one of {', '.join(LOSSES)}, got {config.loss!r}")
    _validate_negatives(config)
    if config.windows not in ("newest", "all"):
        raise InputError(f"--windows: expected newest or all, got {config.windows!r}")
    if config.schedule not in ("cosine", "constant"):
        raise InputError(f"--schedule: expected cosine or constant, got {config.schedule!r}")
    if not 0.0 <= model.item_id_dropout < 1.0:
        raise InputError(
            f"--item-id-dropout: expected a probability in [0, 1), got {model.item_id_dropout}"
        )
    if model.item_id_dropout and not uses_item_text(model):
        raise InputError("--item-id-dropout: needs item text (--item-text)")
    if config.replay_ratio < 0:
        raise InputError(f"--replay-ratio: expected a number >= 0, got {config.replay_ratio}")
    if not 0.0 <= config.ema_decay < 1.0:
        raise InputError(
            f"--ema-decay: expected 0 (off) or a decay in (0, 1), got {config.ema_decay}"
        )
    for name, value in [
        ("max-length", model.max_length),
        ("epochs", config.epochs),
        ("batch-size", config.batch_size),
    ]:
        if value < 1:
            raise InputError(f"--{name}: expected a positive integer, got {value}")
    if model.hidden_size % model.num_heads:
        raise InputError(
            f"--hidden-size ({model.hidden_size}) must be a multiple of --num-heads "
            f"({model.num_heads})"
        )


def _validate_negatives(config: TrainConfig) -> None:
    if config.negative_sampling not in SAMPLINGS:
        raise InputError(
            f"--negative-sampling: expected one of {', '.join(SAMPLINGS)}, "
            f"got {config.negative_sampling!r}"
        )
    if config.loss != "ce" and config.negatives < 1:
        raise InputError(f"--negatives: expected a positive integer, got {config.negatives}")
    if config.loss == "ce":
        # Full softmax scores every item: it has no negatives and touches every row.
        if config.in_batch_negatives:
            raise InputError("--in-batch-negatives: needs --loss bce or sampled-softmax")
        if config.sparse_rows:
            raise InputError("--sparse-rows: needs --loss bce or sampled-softmax")


def uses_item_text(model: ModelConfig) -> bool:
    """Whether the model adds title embeddings (unset: for pretrained backbones only)."""
    return model.item_text if model.item_text is not None else model.backbone != "scratch"


def new_parameter_learning_rate(config: TrainConfig) -> float:
    if config.learning_rate is not None:
        return config.learning_rate
    return 3e-3 if config.model.backbone == "scratch" else 1e-3


def as_dict(config: TrainConfig) -> dict:
    values = asdict(config)
    features = values["model"]["context_features"]
    values["model"]["context_features"] = features if features == AUTO else list(features)
    return values
