"""Translation between the client's dataclasses and the generated protobuf messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from logitrec_client import queries
from logitrec_client.proto import recommender_pb2 as pb
from logitrec_client.queries import HistoryLike, RecommendQuery, history_events
from logitrec_client.results import (
    Contribution,
    ModelInfo,
    Recommendation,
    Recommendations,
    ScoredItem,
    Scores,
    Timings,
)


def _events(history: HistoryLike) -> list[pb.Event]:
    return [
        pb.Event(item_id=e.item_id, event_type=e.event_type, timestamp=e.timestamp)
        for e in history_events(history)
    ]


def recommend_request(query: RecommendQuery) -> pb.RecommendRequest:
    """The RecommendRequest for a query; exclude_seen is always sent, so the default is ours."""
    return pb.RecommendRequest(
        history=_events(query.history),
        user_id=query.user_id or "",
        context=queries.context_strings(query.context),
        k=query.k,
        exclude_seen=query.exclude_seen,
        exclude_item_ids=query.exclude,
        allowed_item_ids=query.allowed,
        model=query.model or "",
        model_version=query.model_version or 0,
        explain=query.explain,
        explain_contributors=query.explain_contributors or 0,
        rerank=_rerank(query.rerank),
        filters=[_filter(f) for f in query.filters],
        request_id=query.request_id or "",
    )


def _rerank(rerank: queries.Rerank | None) -> pb.Rerank | None:
    if rerank is None:
        return None
    message = pb.Rerank(cap_field=rerank.cap_field)
    for name in ("popularity_beta", "mmr_lambda", "category_cap", "calibration"):
        value = getattr(rerank, name)
        if value is not None:
            setattr(message, name, value)
    return message


def _filter(condition: queries.Filter) -> pb.MetadataFilter:
    message = pb.MetadataFilter(field=condition.field, any_of=condition.any_of)
    if condition.at_least is not None:
        message.at_least = condition.at_least
    if condition.at_most is not None:
        message.at_most = condition.at_most
    return message


def recommend_batch_request(
    batch: Sequence[RecommendQuery | Mapping[str, Any]],
) -> pb.RecommendBatchRequest:
    """The RecommendBatchRequest for queries given as RecommendQuery objects or field dicts."""
    normalised = [q if isinstance(q, RecommendQuery) else RecommendQuery(**q) for q in batch]
    return pb.RecommendBatchRequest(requests=[recommend_request(q) for q in normalised])


def score_request(
    history: HistoryLike,
    item_ids: Sequence[str],
    *,
    user_id: str | None,
    context: Mapping[str, str] | None,
    model: str | None,
    model_version: int | None,
    request_id: str | None,
) -> pb.ScoreRequest:
    """The ScoreRequest for a history and the items to score."""
    return pb.ScoreRequest(
        history=_events(history),
        item_ids=queries.item_ids(item_ids, "item_ids"),
        user_id=user_id or "",
        context=queries.context_strings(context),
        model=model or "",
        model_version=model_version or 0,
        request_id=request_id or "",
    )


def model_info_request(model: str | None, model_version: int | None) -> pb.GetModelInfoRequest:
    """The GetModelInfoRequest; empty model and version 0 mean the default model, latest version."""
    return pb.GetModelInfoRequest(model=model or "", model_version=model_version or 0)


def timings(message: pb.Timings) -> Timings:
    """Timings from its message."""
    return Timings(
        queue_seconds=message.queue_seconds,
        encode_seconds=message.encode_seconds,
        retrieve_seconds=message.retrieve_seconds,
        score_seconds=message.score_seconds,
        total_seconds=message.total_seconds,
        rerank_seconds=message.rerank_seconds,
        explain_seconds=message.explain_seconds,
    )


def _contribution(message: pb.Contribution) -> Contribution:
    return Contribution(
        logit_delta=message.logit_delta,
        item_id=message.item_id,
        title=message.title,
        context_feature=message.context_feature,
        context_value=message.context_value,
        history_position=message.history_position,
    )


def recommendations(response: pb.RecommendResponse) -> Recommendations:
    """Recommendations from a RecommendResponse."""
    return Recommendations(
        items=tuple(
            Recommendation(
                item_id=item.item_id,
                logit=item.logit,
                probability=item.probability,
                rank=item.rank,
                title=item.title,
                contributions=tuple(_contribution(c) for c in item.contributions),
            )
            for item in response.items
        ),
        model=response.model,
        model_version=response.model_version,
        unknown_item_ids=tuple(response.unknown_item_ids),
        popularity_fallback=response.popularity_fallback,
        history_truncated_to=response.history_truncated_to,
        timings=timings(response.timings),
        request_id=response.request_id,
        filters_widened=response.filters_widened,
        eligible_items=response.eligible_items,
    )


def scores(response: pb.ScoreResponse) -> Scores:
    """Scores from a ScoreResponse."""
    return Scores(
        items=tuple(ScoredItem(item_id=item.item_id, logit=item.logit) for item in response.items),
        model=response.model,
        model_version=response.model_version,
        unknown_item_ids=tuple(response.unknown_item_ids),
        unknown_scored_item_ids=tuple(response.unknown_scored_item_ids),
        timings=timings(response.timings),
        request_id=response.request_id,
    )


def model_info(response: pb.GetModelInfoResponse) -> ModelInfo:
    """ModelInfo from a GetModelInfoResponse."""
    return ModelInfo(
        model=response.model,
        model_version=response.model_version,
        loaded_versions=tuple(response.loaded_versions),
        num_items=response.num_items,
        hidden_size=response.hidden_size,
        max_length=response.max_length,
        context_features=tuple(response.context_features),
        index_type=response.index_type,
        backend=response.backend,
        candidate_count=response.candidate_count,
        metadata_fields=tuple(response.metadata_fields),
    )
