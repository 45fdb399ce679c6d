"""The gateway's pure core: request validation and id mapping in and out, padding, candidates,
ranking."""

import numpy as np
import pytest

from logitrec.repository import Manifest
from serving import pipeline
from serving.errors import InvalidRequest
from serving.query import Query, prepare_query, ranked_items, softmax
from serving.registry import ModelVersion


def model(num_items=6, max_length=3):
    ids = np.array([f"i{n}" for n in range(1, num_items + 1)], dtype=object)
    return ModelVersion(
        name="m",
        version=1,
        manifest=Manifest(
            name="m", version=1, num_items=num_items, hidden_size=4, max_length=max_length,
            context_vocabulary={"g": ["F", "M"]}, index={"factory": "Flat"}, opset=17,
            precision="fp32", triton_backend="python", device="cpu", catalog_sha256="",
        ),
        encoder_path=None,
        scorer_path=None,
        item_ids=ids,
        titles=[None] * num_items,
        popularity=np.array([5, 1, 9, 0, 3, 2], dtype=float)[:num_items],
        index_of={item_id: i for i, item_id in enumerate(ids, start=1)},
        context_lookup={"g": {"F": 1, "M": 2}},
        faiss_index=None,
        head=np.zeros((num_items + 1, 5), np.float32),
    )  # fmt: skip


def test_history_is_mapped_trimmed_to_the_window_and_unknown_ids_reported():
    query = prepare_query(model(), ["i1", "x", "i2", "i3", "i4", "x"], context={"g": "M"}, k=2)
    assert query.items.tolist() == [2, 3, 4] and query.truncated_to == 3
    assert query.unknown_item_ids == ("x",)
    assert query.exclude.tolist() == [1, 2, 3, 4]  # every seen item, not just the window
    assert query.context.tolist() == [2]
    unknown_value = prepare_query(model(), ["i1"], context={"g": "other"}, k=2)
    assert unknown_value.context.tolist() == [0]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"k": 0}, "k"),
        ({"k": 7}, "k"),
        ({"exclude_ids": ["i1", "i1"]}, "exclude_item_ids"),
        ({"allowed_ids": ["i2", "i2"]}, "allowed_item_ids"),
        ({"allowed_ids": ["i1"]}, "allowed_item_ids"),  # the only allowed item was seen
        ({"context": {"age": "3"}}, "context"),
        ({"max_history": 0}, "history"),
        ({"score_ids": []}, "item_ids"),
        ({"score_ids": ["nope"]}, "item_ids"),
    ],
)
def test_invalid_requests_name_the_field(arguments, field):
    with pytest.raises(InvalidRequest) as caught:
        prepare_query(model(), ["i1"], **{"k": 2, **arguments})
    assert caught.value.field == field and str(caught.value).startswith(f"{field}: ")


def test_padding_and_exact_candidates():
    m = model()
    queries = [prepare_query(m, h, k=2) for h in (["i1"], ["i2", "i3"])]
    assert pipeline.pad_histories(queries).tolist() == [[0, 1], [2, 3]]
    assert pipeline.exact_candidates(queries[1], m.num_items).tolist() == [1, 4, 5, 6]
    assert pipeline.pad_candidates([np.array([1]), np.array([2, 3])]).tolist() == [[1, 0], [2, 3]]


def test_top_k_orders_by_logit_and_never_returns_padding():
    ranked = pipeline.top_k(np.array([4, 0, 2, 9]), np.array([0.5, np.inf, 2.0, 1.0]), 3)
    assert ranked.items.tolist() == [2, 9, 4]
    assert ranked.logits.tolist() == [2.0, 1.0, 0.5]


def test_pruned_candidates_drop_exclusions_and_keep_the_index_order():
    query = prepare_query(model(), ["i2"], exclude_ids=["i5"], k=2)
    found = np.array([6, 5, 2, 1, 3, 0, 0])  # best first, as FAISS returns them; 0 = no hit
    assert pipeline.pruned_candidates(query, found, 3).tolist() == [6, 1, 3]
    assert pipeline.pruned_candidates(query, found, 2).tolist() == [6, 1]
    assert pipeline.search_width(query, 4, 6) == 6
    assert pipeline.search_width(query, 1, 6) == 3  # one candidate plus the two exclusions


def test_popularity_fallback_respects_exclusions():
    m = model()
    query = prepare_query(m, [], k=3, exclude_ids=["i3"])
    assert query.fallback
    assert pipeline.popularity_ranking(m, query).items.tolist() == [1, 5, 6]
    probabilities = softmax(np.array([1.0, 1.0]))
    assert probabilities.tolist() == [0.5, 0.5]


def test_ranked_items_map_indices_back_to_ids_titles_and_probabilities():
    m = model()
    items = ranked_items(m, np.array([3, 1]), np.array([2.0, 0.0], dtype=np.float32))
    assert [(i.item_id, i.rank) for i in items] == [("i3", 1), ("i1", 2)]
    assert items[0].title == "" and items[0].logit == 2.0
    assert items[0].probability == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert sum(i.probability for i in items) == pytest.approx(1.0)


def test_exact_rankings_by_blocks_match_a_full_sort_and_honour_exclusions():
    rng = np.random.default_rng(3)
    num_items, dim = 1000, 8
    head = rng.normal(size=(num_items + 1, dim + 1)).astype(np.float32)
    head[0] = 0  # padding row, never ranked
    vectors = rng.normal(size=(4, dim)).astype(np.float32)
    # Exclusions across block borders (block 64 below), one query excluding all but 3, and
    # one asking for more items than a block holds.
    excluded = [np.array([5, 64, 65, 128, 999]), np.array([], np.int64),
                np.setdiff1d(np.arange(1, num_items + 1), [10, 500, 1000]),
                np.array([2, 3])]  # fmt: skip
    queries = [
        Query(items=np.array([1]), context=np.zeros(0, np.int64), k=k, exclude=np.sort(e))
        for k, e in zip((5, 20, 5, 150), excluded, strict=True)
    ]
    rankings = pipeline.exact_rankings(vectors, head, queries, block=64, first_block=16)
    assert [r.items.tolist() for r in rankings] == [
        r.items.tolist() for r in pipeline.exact_rankings(vectors, head, queries, block=64)
    ]  # the threshold's first block does not change the answer
    logits = vectors @ head[1:, :-1].T + head[1:, -1]
    for query, ranking, row in zip(queries, rankings, logits, strict=True):
        allowed = np.setdiff1d(np.arange(1, num_items + 1), query.exclude)
        expected = allowed[np.argsort(-row[allowed - 1], kind="stable")][: query.k]
        assert ranking.items.tolist() == expected.tolist()
        assert np.allclose(ranking.logits, row[expected - 1], atol=1e-5)
    assert len(rankings[2].items) == 3  # fewer eligible items than k: those, no excluded one
