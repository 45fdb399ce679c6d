"""The client SDK's calls, blocking and asyncio: what reaches the gateway and what comes back."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2
from logitrec_client import (
    AsyncRecommenderClient,
    Event,
    HealthStatus,
    Recommendation,
    RecommenderClient,
    RecommendQuery,
    Timings,
)
from test_client_fakes import CATALOG, SERVICE, Gateway, gateway_fixture  # noqa: F401


def test_recommend_sends_what_the_caller_asked_for(gateway: Gateway) -> None:
    with RecommenderClient(gateway.target) as client:
        client.recommend(
            ["i1", Event("i2", event_type="purchase", timestamp=1_700_000_000)],
            3,
            user_id="u7",
            context={"gender": "F", "age": 25},  # type: ignore[dict-item]  # non-strings are str()'d
            exclude=["i5"],
            allowed=["i3", "i4", "i5"],
            model="tiny",
            model_version=2,
            request_id="req-1",
        )
        client.recommend(["i1"], exclude_seen=False)

    first, second = gateway.servicer.requests("Recommend")
    assert [e.item_id for e in first.history] == ["i1", "i2"]
    assert (first.history[1].event_type, first.history[1].timestamp) == ("purchase", 1_700_000_000)
    assert first.k == 3
    assert first.user_id == "u7"
    assert dict(first.context) == {"gender": "F", "age": "25"}
    assert first.HasField("exclude_seen") and first.exclude_seen is True
    assert list(first.exclude_item_ids) == ["i5"]
    assert list(first.allowed_item_ids) == ["i3", "i4", "i5"]
    assert (first.model, first.model_version, first.request_id) == ("tiny", 2, "req-1")
    # An explicit False must reach the server as False, not as "unset".
    assert second.HasField("exclude_seen") and second.exclude_seen is False
    assert second.k == 10
    assert second.model == "" and second.request_id == ""


def test_recommend_returns_ranked_dataclasses(gateway: Gateway) -> None:
    with RecommenderClient(gateway.target) as client:
        result = client.recommend(["i1", "unknown-9", "i2"], k=2)

    assert [item.rank for item in result] == [1, 2]
    assert result.item_ids == ["i3", "i4"]
    first = result[0]
    assert isinstance(first, Recommendation)
    assert (first.title, first.logit) == (CATALOG["i3"], 3.0)
    assert sum(item.probability for item in result) == pytest.approx(1.0, abs=1e-6)
    assert result.unknown_item_ids == ("unknown-9",)
    assert result.history_truncated_to == 2
    assert not result.popularity_fallback
    assert (result.model, result.model_version, result.request_id) == ("tiny", 3, "generated-id")
    assert result.timings.total_seconds == pytest.approx(0.012)
    assert isinstance(result.timings, Timings)
    with pytest.raises(AttributeError):
        result.model = "changed"  # type: ignore[misc]  # frozen

    table = str(result)
    assert table.splitlines()[0].split() == ["rank", "item_id", "title", "logit", "probability"]
    assert "Heat (1995)" in table and "unknown history items: unknown-9" in table


def test_a_single_string_history_is_refused_before_sending(gateway: Gateway) -> None:
    with RecommenderClient(gateway.target) as client, pytest.raises(TypeError, match="history"):
        client.recommend("i1")  # type: ignore[arg-type]
    assert gateway.servicer.attempts == 0


def test_recommend_batch_keeps_query_order_and_accepts_dicts(gateway: Gateway) -> None:
    with RecommenderClient(gateway.target) as client:
        results = client.recommend_batch(
            [
                RecommendQuery(history=["i1"], k=1, request_id="a"),
                {"history": ["i3"], "k": 2, "exclude": ["i1"], "request_id": "b"},
                {"history": ["nobody-knows-me"], "k": 1},
            ]
        )
        with pytest.raises(TypeError):
            client.recommend_batch([{"histroy": ["i1"]}])

    assert [r.request_id for r in results] == ["a", "b", "generated-id"]
    assert results[0].item_ids == ["i2"]
    assert results[1].item_ids == ["i2", "i4"]
    assert results[2].popularity_fallback
    (request,) = gateway.servicer.requests("RecommendBatch")
    assert [r.exclude_seen for r in request.requests] == [True, True, True]


def test_score_and_model_info_round_trip(gateway: Gateway) -> None:
    with RecommenderClient(gateway.target) as client:
        scores = client.score(["i1", "ghost"], ["i2", "i9", "i4"], model="tiny")
        info = client.model_info("tiny", model_version=2)

    assert scores.as_dict() == {"i2": 4.0, "i4": 2.0}
    assert [item.item_id for item in scores] == ["i2", "i4"]
    assert scores.unknown_scored_item_ids == ("i9",)
    assert scores.unknown_item_ids == ("ghost",)
    assert "not in the catalog: i9" in str(scores)
    assert (info.model, info.model_version, info.loaded_versions) == ("tiny", 2, (2, 3))
    assert (info.num_items, info.hidden_size, info.max_length) == (5, 32, 16)
    assert info.context_features == ("gender", "age")
    assert (info.index_type, info.backend, info.candidate_count) == ("Flat", "embedded", 0)
    assert "embedded" in str(info)


def test_health_reports_serving_and_not_serving(gateway: Gateway) -> None:
    with RecommenderClient(gateway.target) as client:
        assert client.health() is HealthStatus.SERVING
        gateway.health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert client.health() is HealthStatus.NOT_SERVING
        assert client.health("") is HealthStatus.SERVING
        assert client.health("no.such.Service") is HealthStatus.SERVICE_UNKNOWN


def test_bearer_token_is_sent_as_authorization_metadata(gateway: Gateway) -> None:
    with RecommenderClient(gateway.target, token="s3cret") as client:
        client.recommend(["i1"])
        client.health()
    with RecommenderClient(gateway.target) as client:
        client.model_info()

    with_token, without_token = gateway.servicer.metadata
    assert with_token["authorization"] == "Bearer s3cret"
    assert "authorization" not in without_token
    assert with_token["user-agent"].startswith("logitrec-client/")
    assert "s3cret" not in repr(client) + repr(client._settings)


@pytest.mark.asyncio
async def test_async_client_round_trips(gateway: Gateway) -> None:
    async with AsyncRecommenderClient(gateway.target, token="t") as client:
        result = await client.recommend(["i1"], k=2, context={"age": "30"}, exclude_seen=False)
        batch = await client.recommend_batch([{"history": ["i1"], "k": 1}])
        scores = await client.score(["i1"], ["i5"])
        info = await client.model_info()
        status = await client.health()

    assert result.item_ids == ["i1", "i2"]
    assert [item.rank for item in result] == [1, 2]
    assert result[0].title == CATALOG["i1"]
    assert batch[0].item_ids == ["i2"]
    assert scores.as_dict() == {"i5": 1.0}
    assert info.model == "tiny"
    assert status is HealthStatus.SERVING
    (request,) = gateway.servicer.requests("Recommend")
    assert request.HasField("exclude_seen") and request.exclude_seen is False
    assert dict(request.context) == {"age": "30"}
    assert gateway.servicer.metadata[0]["authorization"] == "Bearer t"
