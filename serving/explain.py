"""Leave-one-out explanations: how much each history item and context feature moved each returned
item's logit. Pure numpy, no I/O: the engine runs the encoder on `variants` and hands the user
vectors back to `contributions`.

The contribution of history item j to returned item i is exact, not an approximation:
    logit_i(full history) - logit_i(history without j)
and a context feature's is the same with the feature set to 0 (unknown). Positive means the
history item (or feature) pushed the returned item up. Every variant is one row of a single
encoder batch: row 0 the full history, then one row per history position, then one per known
context feature.

A history that holds an item twice gets one row per occurrence: each row removes that occurrence
only, so each occurrence is credited with what it adds on top of the other.
"""

from dataclasses import dataclass

import numpy as np

ITEM = "item"
CONTEXT = "context"


@dataclass(frozen=True)
class Removal:
    """What one variant row left out of the full request."""

    kind: str  # ITEM or CONTEXT
    position: int  # history position (0 = oldest) or context feature index
    item: int  # the removed item's index for ITEM, else 0


def variants(
    items: np.ndarray, context: np.ndarray, max_length: int
) -> tuple[np.ndarray, np.ndarray, list[Removal]]:
    """The encoder batch that explains one request, and what each row after the first removed.

    items: the known history, item indices oldest first (at most `max_length`, the window);
    context: [F] context value indices (0 = unknown). Returns histories [1 + R, len(items)]
    left-padded with 0 (the newest item in the last column, as the engine pads them; a removal
    shifts the older items right so the history stays contiguous), context [1 + R, F], and the
    R removals. Position ids count back from the newest item, so the one column of left padding
    a removal row gains changes nothing but the removal itself.

    A history of one item has no item rows: without it there is nothing for the model to encode
    (the gateway answers an empty history by popularity, not with the model).
    """
    items = np.asarray(items, dtype=np.int64)
    context = np.asarray(context, dtype=np.int64)
    _check_inputs(items, context, max_length)
    removals = _item_removals(items) + _context_removals(context)
    histories = np.zeros((1 + len(removals), len(items)), dtype=np.int64)
    contexts = np.tile(context, (1 + len(removals), 1))
    histories[0] = items
    for row, removal in enumerate(removals, start=1):
        if removal.kind == ITEM:
            kept = np.delete(items, removal.position)
            histories[row, len(items) - len(kept) :] = kept
        else:
            histories[row] = items
            contexts[row, removal.position] = 0
    return histories, contexts, removals


def _check_inputs(items: np.ndarray, context: np.ndarray, max_length: int) -> None:
    if items.ndim != 1 or not len(items):
        raise ValueError(f"items: expected a non-empty 1-D history, got shape {items.shape}")
    if len(items) > max_length:
        raise ValueError(f"items: {len(items)} history items, the model's window is {max_length}")
    if (items < 1).any():
        raise ValueError("items: expected known item indices (>= 1), found padding or unknowns")
    if context.ndim != 1:
        raise ValueError(f"context: expected [F] feature value indices, got shape {context.shape}")


def _item_removals(items: np.ndarray) -> list[Removal]:
    if len(items) < 2:
        return []
    return [Removal(ITEM, position, int(item)) for position, item in enumerate(items)]


def _context_removals(context: np.ndarray) -> list[Removal]:
    """Only known features: an unknown one (0) already is what removing it would make it."""
    return [Removal(CONTEXT, int(feature), 0) for feature in np.flatnonzero(context)]


def contributions(
    vectors: np.ndarray, head: np.ndarray, returned: np.ndarray, removals: list[Removal]
) -> np.ndarray:
    """[k, R] logit deltas, full minus removed (positive: the removal lowers the item's logit).

    vectors: the encoder's user vectors for the rows of `variants` [1 + R, d]; head: [N + 1, d + 1]
    rows [W_i, b_i]; returned: the returned item indices [k]. The bias cancels in the difference
    but is kept, so each logit is exactly what the scorer computes.
    """
    returned = np.asarray(returned, dtype=np.int64)
    if len(vectors) != 1 + len(removals):
        raise ValueError(
            f"vectors: expected {1 + len(removals)} rows (the full request and one per removal), "
            f"got {len(vectors)}"
        )
    rows = head[returned]  # [k, d + 1]
    logits = vectors.astype(head.dtype, copy=False) @ rows[:, :-1].T + rows[:, -1]  # [1 + R, k]
    return (logits[0] - logits[1:]).T


def top_contributors(
    deltas: np.ndarray, removals: list[Removal], limit: int, *, kind: str | None = None
) -> list[list[tuple[Removal, float]]]:
    """Per returned item, its `limit` strongest supporters: largest positive delta first.

    Ordered by the signed delta, not by its size: an explanation says what pushed the item up
    ("because you watched X (+1.8)"), and removing the first reported contributor is then the
    one removal that lowers the item's logit most. A removal that pushed the item down (a
    negative delta) is listed only when fewer than `limit` removals helped it, after all that
    did. `kind` (ITEM or CONTEXT) keeps removals of that kind only. Ties keep the removals'
    order (history oldest first, then context).
    """
    chosen = [i for i, r in enumerate(removals) if kind is None or r.kind == kind]
    explained = []
    for row in deltas:
        values = row[chosen]
        order = np.argsort(-values, kind="stable")[: max(0, limit)]
        explained.append([(removals[chosen[i]], float(values[i])) for i in order])
    return explained
