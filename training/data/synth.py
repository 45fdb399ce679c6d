"""Synthetic interaction logs with planted sequential structure, for tests and the offline demo.

The structure a sequential model can learn and popularity cannot:
- items live in latent clusters (the cluster's theme is in the item's title and genre);
- a user browses one cluster at a time, and often moves from an item to its fixed successor;
- users drift to the next cluster now and then, and their first cluster follows their age group.
Output is what a user would hand us: interactions.csv, items.csv and users.csv.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from logitrec.errors import InputError

THEMES = [
    "Space",
    "Western",
    "Noir",
    "Jazz",
    "Horror",
    "Romance",
    "Heist",
    "Robot",
    "Ocean",
    "Desert",
    "Castle",
    "Jungle",
    "Detective",
    "Pirate",
    "Samurai",
    "Zombie",
    "Wizard",
    "Circus",
    "Arctic",
    "Volcano",
    "Carnival",
    "Galaxy",
    "Ninja",
    "Dragon",
]
ADJECTIVES = [
    "Silent",
    "Golden",
    "Broken",
    "Hidden",
    "Last",
    "Lost",
    "Midnight",
    "Red",
    "Wild",
    "Secret",
    "Frozen",
    "Burning",
]
NOUNS = [
    "Road",
    "Empire",
    "Promise",
    "Garden",
    "Signal",
    "Kingdom",
    "Harbor",
    "Machine",
    "Letter",
    "Mirror",
    "Storm",
    "City",
]
AGE_GROUPS = (1, 18, 25, 35, 45, 50, 56)  # the MovieLens age codes
START_TIME = 1_600_000_000  # 2020-09-13, seconds


@dataclass(frozen=True, kw_only=True)
class SynthOptions:
    users: int = 2000
    items: int = 500
    clusters: int = 10
    mean_length: float = 40.0
    min_length: int = 8
    max_length: int = 2000
    follow_probability: float = 0.5  # next item is the current item's successor
    drift_probability: float = 0.1  # otherwise, chance to move on to the next cluster
    popularity_exponent: float = 1.0  # Zipf exponent of item popularity inside a cluster
    seed: int = 0


def _check(options: SynthOptions) -> None:
    if options.users < 1 or options.items < 2:
        raise InputError("--users must be >= 1 and --items >= 2")
    if not 1 <= options.clusters <= options.items:
        raise InputError(
            f"--clusters: expected 1 to --items ({options.items}), got {options.clusters}"
        )
    if options.min_length < 1 or options.mean_length < options.min_length:
        raise InputError("--mean-length must be at least --min-length, which must be >= 1")
    for name in ("follow_probability", "drift_probability"):
        if not 0 <= getattr(options, name) <= 1:
            raise InputError(f"--{name.replace('_', '-')}: expected a probability in [0, 1]")


def generate(options: SynthOptions) -> dict[str, pl.DataFrame]:
    """Return the interactions, items and users tables (pure; seeded)."""
    _check(options)
    rng = np.random.default_rng(options.seed)
    n_items, n_clusters = options.items, options.clusters

    cluster_of_item = rng.permutation(np.arange(n_items) % n_clusters)
    members = [np.flatnonzero(cluster_of_item == c) for c in range(n_clusters)]
    # Successor: a random cycle through each cluster's items.
    successor = np.empty(n_items, dtype=np.int64)
    for items in members:
        cycle = rng.permutation(items)
        successor[cycle] = np.roll(cycle, -1)
    # Popularity sampling inside a cluster: cluster c's CDF occupies [c, c + 1) of one array.
    cdf_items = np.concatenate([rng.permutation(items) for items in members])
    cdf_values = np.concatenate(
        [c + _zipf_cdf(len(items), options.popularity_exponent) for c, items in enumerate(members)]
    )

    def popular_item(clusters: np.ndarray) -> np.ndarray:
        position = np.searchsorted(cdf_values, clusters + rng.random(len(clusters)), side="right")
        return cdf_items[position - 1]

    n_users = options.users
    age_group = rng.integers(len(AGE_GROUPS), size=n_users)
    lengths = _lengths(rng, options)
    # The first cluster follows the age group, with some spread.
    cluster = (
        age_group * n_clusters // len(AGE_GROUPS) + rng.integers(2, size=n_users)
    ) % n_clusters
    user_start = START_TIME + rng.integers(0, 365 * 86_400, size=n_users)

    # Events are stored flat, user after user: user u's step t lives at first[u] + t.
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    events = np.empty(int(lengths.sum()), dtype=np.int64)
    current = popular_item(cluster)
    events[first] = current
    for step in range(1, int(lengths.max())):
        active = np.flatnonzero(lengths > step)
        follow = rng.random(len(active)) < options.follow_probability
        drift = ~follow & (rng.random(len(active)) < options.drift_probability)
        cluster[active[drift]] = (cluster[active[drift]] + 1) % n_clusters
        chosen = popular_item(cluster[active])
        chosen[follow] = successor[current[active[follow]]]
        current[active] = chosen
        events[first[active] + step] = chosen

    user_of_event = np.repeat(np.arange(n_users), lengths)
    gaps = rng.exponential(3600.0, size=len(events)).astype(np.int64) + 1
    # Each user's clock starts at their start time and moves on by the gaps.
    cumulative = np.cumsum(gaps)
    timestamps = user_start[user_of_event] + cumulative - cumulative[first][user_of_event]

    interactions = pl.DataFrame(
        {
            "user_id": user_of_event + 1,
            "item_id": events + 1,
            "timestamp": timestamps,
        }
    )
    items = pl.DataFrame(
        {
            "item_id": np.arange(1, n_items + 1),
            "title": [_title(rng, cluster_of_item[i], i) for i in range(n_items)],
            "genres": [THEMES[c % len(THEMES)] for c in cluster_of_item],
        }
    )
    users = pl.DataFrame(
        {
            "user_id": np.arange(1, n_users + 1),
            "gender": np.where(rng.random(n_users) < 0.5, "F", "M"),
            "age": np.asarray(AGE_GROUPS)[age_group],
            "occupation": rng.integers(21, size=n_users),
        }
    )
    return {"interactions": interactions, "items": items, "users": users}


def _zipf_cdf(size: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, size + 1) ** exponent
    cdf = np.cumsum(weights) / weights.sum()
    return np.concatenate([[0.0], cdf[:-1]])  # left edges: searchsorted picks the bucket


def _lengths(rng: np.random.Generator, options: SynthOptions) -> np.ndarray:
    extra = rng.exponential(options.mean_length - options.min_length, size=options.users)
    return np.clip(
        options.min_length + extra.astype(np.int64), options.min_length, options.max_length
    )


def _title(rng: np.random.Generator, cluster: int, index: int) -> str:
    theme = THEMES[cluster % len(THEMES)]
    return f"{rng.choice(ADJECTIVES)} {theme} {rng.choice(NOUNS)} {index + 1}"


def write_synthetic(tables: dict[str, pl.DataFrame], directory: Path) -> None:
    for name, frame in tables.items():
        frame.write_csv(Path(directory) / f"{name}.csv")
