"""Re-ranking on small arrays: the defaults change nothing, each lever moves the list the way it
promises, and every filter or setting a caller gets wrong is refused naming the field."""

import numpy as np
import polars as pl
import pytest

from serving import pipeline
from serving.rerank import (
    ItemMetadata,
    MetadataFilter,
    RerankSettings,
    candidate_pool,
    check_filters,
    rerank,
)

GENRES = ["Drama", "Comedy", "Drama|Romance", "Comedy|Romance", "Horror", "Drama", None, ""]
YEARS = [1995, 1972, None, 1999, 1980, 2000, 1990, 1960]


def catalog(genres=GENRES, years=YEARS) -> pl.DataFrame:
    n = len(genres)
    return pl.DataFrame(
        {
            "index": range(1, n + 1),
            "item_id": [f"m{i}" for i in range(1, n + 1)],
            "title": [f"Movie {i}" for i in range(1, n + 1)],
            "popularity": [10 * i for i in range(1, n + 1)],
            "genres": genres,
            "year": pl.Series(years, dtype=pl.Int32),
        }
    )


def pool(rng: np.random.Generator, num_items: int, size: int):
    """A shuffled candidate pool with its logits, padding and one excluded (-inf) item."""
    items = rng.choice(np.arange(1, num_items + 1), size, replace=False)
    logits = rng.normal(size=size).astype(np.float32)
    logits[0] = -np.inf
    return np.concatenate([items, [0]]), np.concatenate([logits, [-np.inf]]).astype(np.float32)


def head(rng: np.random.Generator, num_items: int, dim: int = 4) -> np.ndarray:
    rows = rng.normal(size=(num_items + 1, dim + 1)).astype(np.float32)
    rows[0] = 0
    return rows


def reranked(items, logits, k, settings, *, popularity, vectors=None, metadata=None, history=()):
    return rerank(
        items,
        logits,
        k,
        settings,
        popularity=popularity,
        vectors=vectors,
        metadata=metadata,
        history=np.asarray(history, dtype=np.int64),
    )


def genre_names(metadata: ItemMetadata, item: int) -> list[str]:
    genres = metadata.categories("genres")
    return [genres.values[c] for c in genres.of(item)]


# --- the defaults and lambda = 1 are today's ranking ------------------------------------------


def test_default_settings_return_exactly_todays_top_k_by_logit():
    rng = np.random.default_rng(0)
    num_items = 500
    popularity = rng.integers(0, 1000, size=num_items)
    for k in (1, 10, 60):
        items, logits = pool(rng, num_items, 200)
        expected = pipeline.top_k(items, logits, k)
        got = reranked(items, logits, k, RerankSettings(), popularity=popularity)
        assert got.items.tolist() == expected.items.tolist()
        assert got.logits.tolist() == expected.logits.tolist()
        assert 0 not in got.items and np.isfinite(got.logits).all()


def test_mmr_with_lambda_one_is_pure_logit_order_even_through_the_greedy_path():
    rng = np.random.default_rng(1)
    num_items = 8
    metadata = ItemMetadata.from_catalog(catalog())
    popularity = np.arange(num_items)
    vectors = head(rng, num_items)
    items, logits = np.arange(1, 9), rng.normal(size=8).astype(np.float32)
    expected = pipeline.top_k(items, logits, 5).items.tolist()
    # A cap of k per genre can never bind on k items, but sends the pool through the greedy
    # re-ranker, which must then order purely by logit.
    settings = RerankSettings(mmr_lambda=1.0, category_cap=5)
    got = reranked(
        items, logits, 5, settings, popularity=popularity, vectors=vectors, metadata=metadata
    )
    assert got.items.tolist() == expected


def test_mmr_below_one_picks_a_dissimilar_item_over_a_near_duplicate():
    # Items 1 and 2 point the same way, item 3 elsewhere; logits 3.0 > 2.9 > 2.0.
    vectors = np.array([[0, 0, 0], [1, 0, 0.5], [1, 0.01, 0.5], [0, 1, 0.5]], np.float32)
    items, logits = np.array([1, 2, 3]), np.array([3.0, 2.9, 2.0], np.float32)
    popularity = np.ones(3)
    pure = reranked(items, logits, 2, RerankSettings(), popularity=popularity, vectors=vectors)
    diverse = reranked(
        items, logits, 2, RerankSettings(mmr_lambda=0.5), popularity=popularity, vectors=vectors
    )
    assert pure.items.tolist() == [1, 2]
    assert diverse.items.tolist() == [1, 3]
    assert diverse.logits.tolist() == [3.0, 2.0]  # the original logits, not re-ranking scores


# --- popularity ----------------------------------------------------------------------------


def test_positive_beta_moves_less_popular_items_up_and_negative_beta_popular_ones():
    rng = np.random.default_rng(2)
    num_items, k = 1000, 10
    popularity = rng.zipf(1.5, size=num_items).clip(max=100_000)
    items, logits = pool(rng, num_items, 300)
    mean_popularity = {}
    for beta in (-1.0, 0.0, 1.0):
        got = reranked(
            items, logits, k, RerankSettings(popularity_beta=beta), popularity=popularity
        )
        assert len(got.items) == k and len(set(got.items.tolist())) == k
        mean_popularity[beta] = popularity[got.items - 1].mean()
        # Each returned logit is that item's own logit from the pool.
        by_item = dict(zip(items.tolist(), logits.tolist(), strict=True))
        assert got.logits.tolist() == [by_item[i] for i in got.items.tolist()]
    assert mean_popularity[1.0] < mean_popularity[0.0] < mean_popularity[-1.0]


def test_beta_orders_by_logit_minus_beta_log_popularity():
    # Logits 2, 1, 0 and counts 99, 9, 0: with add-one smoothing log p differs by log 10 and
    # log 10 again, so beta = 1 lifts each item by exactly the gap to the one above and more.
    items = np.array([1, 2, 3])
    logits = np.array([2.0, 1.0, 0.0], np.float32)
    popularity = np.array([99, 9, 0])
    got = reranked(items, logits, 3, RerankSettings(popularity_beta=1.0), popularity=popularity)
    assert got.items.tolist() == [3, 2, 1]
    half = reranked(items, logits, 3, RerankSettings(popularity_beta=0.1), popularity=popularity)
    assert half.items.tolist() == [1, 2, 3]


# --- category cap and calibration ------------------------------------------------------------


def test_the_genre_cap_holds_and_k_items_still_come_back():
    genres = ["Drama"] * 6 + ["Comedy"] * 6 + ["Horror|Drama"] * 3 + ["Western"] * 5
    metadata = ItemMetadata.from_catalog(catalog(genres, [None] * len(genres)))
    items = np.arange(1, len(genres) + 1)
    logits = np.linspace(10, 0, len(genres)).astype(np.float32)  # dramas first
    popularity = np.ones(len(genres))
    # Six items fit a cap of 2 per genre (2 dramas, 2 comedies, 2 westerns; Horror|Drama is
    # a third drama).
    got = reranked(
        items, logits, 6, RerankSettings(category_cap=2), popularity=popularity, metadata=metadata
    )
    counts: dict[str, int] = {}
    for item in got.items.tolist():
        for genre in genre_names(metadata, item):
            counts[genre] = counts.get(genre, 0) + 1
    assert counts == {"Drama": 2, "Comedy": 2, "Western": 2}
    assert got.items.tolist() == [1, 2, 7, 8, 16, 17]  # within the cap, best logit first
    # A cap the pool cannot satisfy fills the list with the best items left.
    short = reranked(
        items[:6], logits[:6], 4, RerankSettings(category_cap=1), popularity=popularity[:6],
        metadata=metadata,
    )  # fmt: skip
    assert short.items.tolist() == [1, 2, 3, 4]


def test_calibration_moves_the_lists_genre_mix_toward_the_historys():
    # The best logits are all dramas; the history is two thirds comedy.
    genres = ["Drama"] * 10 + ["Comedy"] * 10
    metadata = ItemMetadata.from_catalog(catalog(genres, [None] * 20))
    items = np.arange(1, 21)
    logits = np.concatenate([np.linspace(5, 4, 10), np.linspace(3, 2, 10)]).astype(np.float32)
    popularity = np.ones(20)
    history = [11, 12, 13, 14, 1, 2]

    def comedy_share(weight: float) -> float:
        got = reranked(
            items, logits, 6, RerankSettings(calibration=weight), popularity=popularity,
            metadata=metadata, history=history,
        )  # fmt: skip
        return float(np.mean(got.items > 10))

    shares = [comedy_share(w) for w in (0.0, 0.5, 0.99)]
    assert shares[0] == 0.0
    assert shares[0] < shares[1] <= shares[2]
    assert abs(shares[2] - 4 / 6) < abs(shares[0] - 4 / 6)
    assert shares[2] == pytest.approx(4 / 6)


def test_candidate_pool_is_k_without_reranking_and_much_deeper_with_it():
    assert candidate_pool(10, RerankSettings()) == 10
    for settings in (RerankSettings(popularity_beta=0.5), RerankSettings(mmr_lambda=0.7)):
        assert candidate_pool(10, settings) >= 100
        assert candidate_pool(100, settings) >= 1000


# --- metadata and filters --------------------------------------------------------------------


def test_metadata_from_catalog_and_filters_select_the_right_items():
    metadata = ItemMetadata.from_catalog(catalog())
    assert sorted(metadata.fields) == ["genres", "year"]
    assert genre_names(metadata, 3) == ["Drama", "Romance"]
    assert genre_names(metadata, 7) == genre_names(metadata, 8) == []  # null and empty
    romance = metadata.eligible([MetadataFilter("genres", any_of=("Romance",))], 8)
    assert np.flatnonzero(romance).tolist() == [3, 4]
    either = metadata.eligible([MetadataFilter("genres", any_of=("Horror", "Comedy"))], 8)
    assert np.flatnonzero(either).tolist() == [2, 4, 5]
    recent = metadata.eligible([MetadataFilter("year", at_least=1990)], 8)
    assert np.flatnonzero(recent).tolist() == [1, 4, 6, 7]  # item 3's year is unknown
    both = metadata.eligible(
        [MetadataFilter("genres", any_of=("Drama",)), MetadataFilter("year", at_most=1996)], 8
    )
    assert np.flatnonzero(both).tolist() == [1]
    assert not metadata.eligible([], 8)[0] and metadata.eligible([], 8)[1:].all()


def test_a_catalog_without_metadata_columns_has_no_metadata():
    bare = catalog().drop("genres", "year")
    assert ItemMetadata.from_catalog(bare) is None
    check_filters(None, [])  # no filters: nothing to refuse
    with pytest.raises(ValueError, match=r"^genres: this model version has no item metadata"):
        check_filters(None, [MetadataFilter("genres", any_of=("Drama",))])


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (MetadataFilter("genre", any_of=("Drama",)), "no such item metadata field.*genres, year"),
        (MetadataFilter("genres", at_least=3), "categorical field takes any_of"),
        (MetadataFilter("genres"), "needs at least one any_of value"),
        (MetadataFilter("genres", any_of=("Scifi",)), "no item has the value 'Scifi'"),
        (MetadataFilter("year", any_of=("1990",)), "numeric field takes at_least/at_most"),
        (MetadataFilter("year"), "needs at_least, at_most or both"),
        (MetadataFilter("year", at_least=2000, at_most=1990), "at_least 2000 is above at_most"),
        (MetadataFilter("year", at_least=float("nan")), "at_least is not a number"),
    ],
)
def test_every_filter_error_names_its_field(rule, message):
    metadata = ItemMetadata.from_catalog(catalog())
    with pytest.raises(ValueError, match=f"^{rule.field}: .*{message}"):
        metadata.eligible([rule], 8)
    with pytest.raises(ValueError, match=f"^{rule.field}: "):
        check_filters(metadata, [rule])


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        (RerankSettings(popularity_beta=5.5), "popularity_beta"),
        (RerankSettings(popularity_beta=float("nan")), "popularity_beta"),
        (RerankSettings(mmr_lambda=-0.1), "mmr_lambda"),
        (RerankSettings(mmr_lambda=1.5), "mmr_lambda"),
        (RerankSettings(calibration=2.0), "calibration"),
        (RerankSettings(category_cap=-1), "category_cap"),
    ],
)
def test_every_setting_out_of_range_is_refused_naming_it(settings, field):
    with pytest.raises(ValueError, match=f"^{field}: expected"):
        settings.validate()


def test_cap_and_calibration_need_a_categorical_field_the_model_has():
    metadata = ItemMetadata.from_catalog(catalog())
    with pytest.raises(ValueError, match=r"^category_cap: this model version has no item"):
        RerankSettings(category_cap=2).check_against(None)
    with pytest.raises(ValueError, match=r"^category_cap: year: a numeric"):
        RerankSettings(category_cap=2, cap_field="year").check_against(metadata)
    with pytest.raises(ValueError, match=r"^calibration: tags: no such item metadata field"):
        RerankSettings(calibration=0.5, cap_field="tags").check_against(metadata)
    RerankSettings(category_cap=2).check_against(metadata)  # genres: fine
