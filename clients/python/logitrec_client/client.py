"""The blocking client: RecommenderClient."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from logitrec_client import _convert
from logitrec_client._base import ClientBase
from logitrec_client.config import SERVICE_NAME
from logitrec_client.errors import NotFound, rpc_errors_as_logitrec_errors
from logitrec_client.health import CHECK_METHOD, decode_status, encode_request
from logitrec_client.proto import recommender_pb2_grpc
from logitrec_client.queries import DEFAULT_K, Filter, HistoryLike, RecommendQuery, Rerank
from logitrec_client.results import HealthStatus, ModelInfo, Recommendations, Scores


class RecommenderClient(ClientBase):
    """Blocking client of the LogitRec gateway; one channel, safe to share between threads.

    Use it as a context manager (`with RecommenderClient("host:50051") as client:`) or call
    `close()`. Every failed call raises a LogitRecError (a subclass per failure kind).
    The constructor's arguments are documented on `RecommenderClient.__init__`.
    """

    def _connect(self) -> None:
        self._channel = self._settings.open()
        self._stub = recommender_pb2_grpc.RecommenderServiceStub(self._channel)
        self._health_check = self._channel.unary_unary(
            CHECK_METHOD, request_serializer=encode_request, response_deserializer=decode_status
        )

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        with rpc_errors_as_logitrec_errors():
            return method(
                request,
                timeout=self._settings.deadline(timeout),
                metadata=self._settings.metadata,
            )

    def recommend(
        self,
        history: HistoryLike,
        k: int = DEFAULT_K,
        *,
        user_id: str | None = None,
        context: Mapping[str, str] | None = None,
        exclude_seen: bool = True,
        exclude: Sequence[str] | None = None,
        allowed: Sequence[str] | None = None,
        explain: bool = False,
        explain_contributors: int | None = None,
        rerank: Rerank | None = None,
        filters: Sequence[Filter] = (),
        model: str | None = None,
        model_version: int | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Recommendations:
        """The top-k items for one user history.

        Args:
            history: the user's interactions, oldest first: item-id strings or Events.
            k: how many items to return (1 to the catalog size).
            user_id: for the gateway's logs.
            context: user features by name (e.g. {"gender": "F"}), as the model was trained.
            exclude_seen: leave out items already in the history.
            exclude: items never to return.
            allowed: when given, rank only these items.
            explain: also return, per item, the history items (and context features) that
                pushed its logit up most, measured by leaving each out (k at most the
                gateway's max_explain_k, 20 by default).
            explain_contributors: contributors per item with explain (default 3, at most 20).
            rerank: re-ranking after exact scoring (popularity, diversity, category caps);
                None: the model's defaults.
            filters: only items whose metadata match every Filter (e.g. genres, year).
            model, model_version: which model; None means the gateway's default, latest version.
            request_id: echoed back; the gateway makes one up when None.
            timeout: this call's deadline in seconds (default: the client's).
        """
        query = RecommendQuery(
            history=history,
            k=k,
            user_id=user_id,
            context=context,
            exclude_seen=exclude_seen,
            exclude=exclude,
            allowed=allowed,
            explain=explain,
            explain_contributors=explain_contributors,
            rerank=rerank,
            filters=filters,
            model=model,
            model_version=model_version,
            request_id=request_id,
        )
        response = self._call(self._stub.Recommend, _convert.recommend_request(query), timeout)
        return _convert.recommendations(response)

    def recommend_batch(
        self,
        batch: Sequence[RecommendQuery | Mapping[str, Any]],
        *,
        timeout: float | None = None,
    ) -> list[Recommendations]:
        """Recommendations for many users in one call, in the order of `batch`.

        Each query is a RecommendQuery or a dict of its fields (`{"history": [...], "k": 5}`);
        a misspelt key raises TypeError before anything is sent.
        """
        request = _convert.recommend_batch_request(batch)
        response = self._call(self._stub.RecommendBatch, request, timeout)
        return [_convert.recommendations(answer) for answer in response.responses]

    def score(
        self,
        history: HistoryLike,
        item_ids: Sequence[str],
        *,
        user_id: str | None = None,
        context: Mapping[str, str] | None = None,
        model: str | None = None,
        model_version: int | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Scores:
        """The model's exact logits for the given items (no duplicates) after `history`.

        Arguments as for `recommend`; items the catalog does not know come back in
        `Scores.unknown_scored_item_ids`.
        """
        request = _convert.score_request(
            history,
            item_ids,
            user_id=user_id,
            context=context,
            model=model,
            model_version=model_version,
            request_id=request_id,
        )
        return _convert.scores(self._call(self._stub.Score, request, timeout))

    def model_info(
        self,
        model: str | None = None,
        *,
        model_version: int | None = None,
        timeout: float | None = None,
    ) -> ModelInfo:
        """What a model is (default: the gateway's default model, latest version)."""
        request = _convert.model_info_request(model, model_version)
        return _convert.model_info(self._call(self._stub.GetModelInfo, request, timeout))

    def health(self, service: str = SERVICE_NAME, *, timeout: float | None = None) -> HealthStatus:
        """The gateway's health for `service` ("" asks about the server as a whole).

        A service the server does not know reads SERVICE_UNKNOWN; an unreachable server raises
        Unavailable.
        """
        try:
            return self._call(self._health_check, service, timeout)
        except NotFound:
            return HealthStatus.SERVICE_UNKNOWN

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
