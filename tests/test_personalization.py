"""Re-ranking, metadata filters and explanations through the real gateway (a `logitrec serve`
process on the tiny exported model, whose synthetic items carry a genre each)."""

import numpy as np
import polars as pl
import pytest
from conftest import copy_repository, running_gateway
from logitrec_client import Filter, InvalidRequest, RecommenderClient, Rerank

from logitrec import repository as layout

HISTORY = ["3", "17", "42", "8", "25"]


@pytest.fixture(scope="module")
def catalog(tiny_repository) -> pl.DataFrame:
    return pl.read_parquet(layout.scorer_dir(tiny_repository, "tiny", 1) / layout.CATALOG)


@pytest.fixture(scope="module")
def client(tiny_repository):
    with (
        running_gateway(tiny_repository) as (target, _, _process),
        RecommenderClient(target, timeout=30) as client,
    ):
        yield client


def genre_of(catalog: pl.DataFrame) -> dict[str, str]:
    return dict(zip(catalog["item_id"], catalog["genres"], strict=True))


def test_identity_settings_give_the_models_own_ranking(client):
    plain = client.recommend(HISTORY, 8)
    identity = client.recommend(
        HISTORY, 8, rerank=Rerank(popularity_beta=0.0, mmr_lambda=1.0, category_cap=0)
    )
    assert identity.item_ids == plain.item_ids
    assert [i.logit for i in identity] == pytest.approx([i.logit for i in plain], abs=1e-6)


def test_popularity_debiasing_favours_less_popular_items_and_keeps_the_logits(client, catalog):
    popularity = dict(zip(catalog["item_id"], catalog["popularity"], strict=True))
    plain = client.recommend(HISTORY, 8)
    debiased = client.recommend(HISTORY, 8, rerank=Rerank(popularity_beta=3.0))
    assert debiased.item_ids != plain.item_ids
    mean = np.mean  # of the returned items' training interactions
    assert mean([popularity[i] for i in debiased.item_ids]) < mean(
        [popularity[i] for i in plain.item_ids]
    )
    scored = client.score(HISTORY, debiased.item_ids).as_dict()
    assert [i.logit for i in debiased] == pytest.approx(
        [scored[i] for i in debiased.item_ids], abs=1e-5
    )


def test_mmr_with_lambda_one_is_the_logit_order_and_lower_lambda_diversifies(client, catalog):
    genres = genre_of(catalog)
    plain = client.recommend(HISTORY, 8)
    assert client.recommend(HISTORY, 8, rerank=Rerank(mmr_lambda=1.0)).item_ids == plain.item_ids
    diverse = client.recommend(HISTORY, 8, rerank=Rerank(mmr_lambda=0.3))
    assert len({genres[i] for i in diverse.item_ids}) >= len({genres[i] for i in plain.item_ids})
    assert diverse.item_ids != plain.item_ids


def test_a_genre_cap_holds(client, catalog):
    genres = genre_of(catalog)
    capped = client.recommend(HISTORY, 6, rerank=Rerank(category_cap=1))
    assert len(capped) == 6
    assert len({genres[i] for i in capped.item_ids}) == 6


def test_filters_return_exactly_k_matching_items_and_never_an_excluded_one(client, catalog):
    genres = genre_of(catalog)
    for genre in sorted(set(genres.values())):
        members = {item for item, g in genres.items() if g == genre}
        excluded = sorted(members)[:1]
        eligible = members - set(HISTORY) - set(excluded)
        k = min(5, len(eligible))
        answer = client.recommend(
            HISTORY, 5, exclude=excluded, filters=[Filter("genres", any_of=[genre])]
        )
        assert len(answer) == k, genre
        assert set(answer.item_ids) <= eligible
        assert answer.eligible_items == len(members)
        assert not answer.filters_widened  # a catalog this small is scored exactly


def test_bad_personalization_input_names_the_field(client):
    cases = [
        (dict(filters=[Filter("colour", any_of=["red"])]), "filters[0]"),
        (dict(filters=[Filter("genres", at_least=3)]), "filters[0]"),
        (dict(rerank=Rerank(popularity_beta=9.0)), "popularity_beta"),
        (dict(rerank=Rerank(category_cap=2, cap_field="colour")), "category_cap: colour"),
        (dict(explain=True, explain_contributors=50), "explain_contributors"),
    ]
    for options, field in cases:
        with pytest.raises(InvalidRequest, match=field.replace("[", r"\[").replace("]", r"\]")):
            client.recommend(HISTORY, 3, **options)
    assert "genres" in client.model_info().metadata_fields


def test_explanations_are_the_logit_drop_when_each_history_item_is_left_out(client):
    answer = client.recommend(HISTORY, 3, explain=True, explain_contributors=len(HISTORY))
    assert answer.timings.explain_seconds > 0
    for item in answer:
        history_parts = [c for c in item.contributions if c.item_id]
        assert history_parts, item
        # Every history item's true leave-one-out drop, by the exact Score call.
        drops = {}
        for position, left_out in enumerate(HISTORY):
            rest = HISTORY[:position] + HISTORY[position + 1 :]
            drops[left_out] = item.logit - client.score(rest, [item.item_id]).items[0].logit
        top = history_parts[0]
        assert top.logit_delta == pytest.approx(drops[top.item_id], abs=1e-3)
        assert HISTORY[top.history_position] == top.item_id
        # Reported first: the history item whose removal lowers the item's logit most.
        assert top.logit_delta == pytest.approx(max(drops.values()), abs=1e-3)
        assert str(top).startswith("because you watched ")


def test_requests_without_explain_carry_no_explanations(client):
    answer = client.recommend(HISTORY, 3)
    assert all(not item.contributions for item in answer)
    assert answer.timings.explain_seconds == 0


def test_the_models_rerank_defaults_come_from_the_config_and_requests_override_them(
    tiny_repository, client, tmp_path
):
    debiased = client.recommend(HISTORY, 8, rerank=Rerank(popularity_beta=3.0)).item_ids
    plain = client.recommend(HISTORY, 8).item_ids
    config = tmp_path / "serve.toml"
    config.write_text("[serve.rerank.tiny]\npopularity_beta = 3.0\n")
    with (
        running_gateway(tiny_repository, "--config", config) as (target, _, _process),
        RecommenderClient(target, timeout=30) as configured,
    ):
        assert configured.recommend(HISTORY, 8).item_ids == debiased
        own_order = Rerank(popularity_beta=0.0)
        assert configured.recommend(HISTORY, 8, rerank=own_order).item_ids == plain


def test_a_model_exported_without_metadata_refuses_filters_saying_so(tiny_repository, tmp_path):
    repository = copy_repository(tiny_repository, tmp_path)
    path = layout.scorer_dir(repository, "tiny", 1) / layout.CATALOG
    pl.read_parquet(path).drop("genres").write_parquet(path)
    with (
        running_gateway(repository) as (target, _, _process),
        RecommenderClient(target, timeout=30) as bare,
    ):
        with pytest.raises(InvalidRequest, match="exported without item metadata"):
            bare.recommend(HISTORY, 3, filters=[Filter("genres", any_of=["Western"])])
        with pytest.raises(InvalidRequest, match="no item metadata"):
            bare.recommend(HISTORY, 3, rerank=Rerank(category_cap=1))
        assert len(bare.recommend(HISTORY, 3, rerank=Rerank(popularity_beta=1.0))) == 3
