"""Split time-ordered sequences into train prefixes and next-item targets (pure numpy).

A split is three positions per user into that user's sequence:
- `train_end`: the training sequence is `items[:train_end]`;
- `valid_position` / `test_position`: the target is `items[position]`, the history the model sees
  is `items[:position]`; -1 means the user has no target in that split.
Histories are always prefixes because sequences are sorted by time.
"""

from dataclasses import dataclass

import numpy as np

from logitrec.errors import InputError

SPLITS = ("leave-one-out", "temporal")
NO_TARGET = -1


@dataclass(frozen=True, kw_only=True)
class SplitOptions:
    """leave-one-out (SASRec/BERT4Rec protocol) or a global temporal cut-off."""

    kind: str = "leave-one-out"
    # Temporal: explicit cut-offs (seconds) win; otherwise the fractions of all interactions,
    # by time, that fall after each cut-off.
    valid_cutoff: int | None = None
    test_cutoff: int | None = None
    valid_fraction: float = 0.1
    test_fraction: float = 0.1


@dataclass(frozen=True)
class SplitPositions:
    train_end: np.ndarray
    valid_position: np.ndarray
    test_position: np.ndarray
    cutoffs: dict[str, int] | None = None


def leave_one_out(lengths: np.ndarray) -> SplitPositions:
    """Last item is the test target, second-to-last the validation target, the rest trains.

    Users with fewer than 3 interactions have no targets and train on everything.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    eligible = lengths >= 3
    return SplitPositions(
        train_end=np.where(eligible, lengths - 2, lengths),
        valid_position=np.where(eligible, lengths - 2, NO_TARGET),
        test_position=np.where(eligible, lengths - 1, NO_TARGET),
    )


def temporal(lengths: np.ndarray, timestamps: np.ndarray, options: SplitOptions) -> SplitPositions:
    """Global time cut-offs: train on what happened before the validation cut-off.

    A user's validation target is their first interaction in [valid_cutoff, test_cutoff), the
    test target their first at or after test_cutoff; both need a non-empty history before it.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    valid_cutoff, test_cutoff = _cutoffs(timestamps, options)
    user_of_event = np.repeat(np.arange(len(lengths)), lengths)
    before_valid = np.bincount(user_of_event[timestamps < valid_cutoff], minlength=len(lengths))
    before_test = np.bincount(user_of_event[timestamps < test_cutoff], minlength=len(lengths))
    has_valid = (before_valid >= 1) & (before_test > before_valid)
    has_test = (before_test >= 1) & (lengths > before_test)
    return SplitPositions(
        train_end=before_valid,
        valid_position=np.where(has_valid, before_valid, NO_TARGET),
        test_position=np.where(has_test, before_test, NO_TARGET),
        cutoffs={"valid": int(valid_cutoff), "test": int(test_cutoff)},
    )


def _cutoffs(timestamps: np.ndarray, options: SplitOptions) -> tuple[int, int]:
    for name in ("valid_fraction", "test_fraction"):
        value = getattr(options, name)
        if not 0 < value < 1:
            raise InputError(
                f"--{name.replace('_', '-')}: expected a number in (0, 1), got {value}"
            )
    if options.valid_fraction + options.test_fraction >= 1:
        raise InputError("--valid-fraction plus --test-fraction must be below 1")
    test_cutoff = options.test_cutoff
    if test_cutoff is None:
        test_cutoff = int(np.quantile(timestamps, 1 - options.test_fraction, method="higher"))
    valid_cutoff = options.valid_cutoff
    if valid_cutoff is None:
        quantile = 1 - options.test_fraction - options.valid_fraction
        valid_cutoff = int(np.quantile(timestamps, quantile, method="higher"))
    if valid_cutoff > test_cutoff:
        raise InputError(
            f"--valid-cutoff ({valid_cutoff}) must not be later than --test-cutoff ({test_cutoff})"
        )
    return valid_cutoff, test_cutoff
