"""The asyncio client: AsyncRecommenderClient (same calls as RecommenderClient, awaited)."""

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


class AsyncRecommenderClient(ClientBase):
    """asyncio client of the LogitRec gateway; one grpc.aio channel, used from one event loop.

    Use it as an async context manager (`async with AsyncRecommenderClient(...) as client:`) or
    `await client.close()`. Arguments and results are those of RecommenderClient; every failed
    call raises a LogitRecError (a subclass per failure kind).
    """

    def _connect(self) -> None:
        self._channel = self._settings.open_aio()
        self._stub = recommender_pb2_grpc.RecommenderServiceStub(self._channel)
        self._health_check = self._channel.unary_unary(
            CHECK_METHOD, request_serializer=encode_request, response_deserializer=decode_status
        )

    async def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        with rpc_errors_as_logitrec_errors():
            return await method(
                request,
                timeout=self._settings.deadline(timeout),
                metadata=self._settings.metadata,
            )

    async def recommend(
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
        """The top-k items for one user history (see RecommenderClient.recommend)."""
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
        request = _convert.recommend_request(query)
        return _convert.recommendations(await self._call(self._stub.Recommend, request, timeout))

    async def recommend_batch(
        self,
        batch: Sequence[RecommendQuery | Mapping[str, Any]],
        *,
        timeout: float | None = None,
    ) -> list[Recommendations]:
        """Recommendations for many users in one call (see RecommenderClient.recommend_batch)."""
        request = _convert.recommend_batch_request(batch)
        response = await self._call(self._stub.RecommendBatch, request, timeout)
        return [_convert.recommendations(answer) for answer in response.responses]

    async def score(
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
        """The model's exact logits for the given items (see RecommenderClient.score)."""
        request = _convert.score_request(
            history,
            item_ids,
            user_id=user_id,
            context=context,
            model=model,
            model_version=model_version,
            request_id=request_id,
        )
        return _convert.scores(await self._call(self._stub.Score, request, timeout))

    async def model_info(
        self,
        model: str | None = None,
        *,
        model_version: int | None = None,
        timeout: float | None = None,
    ) -> ModelInfo:
        """What a model is (default: the gateway's default model, latest version)."""
        request = _convert.model_info_request(model, model_version)
        return _convert.model_info(await self._call(self._stub.GetModelInfo, request, timeout))

    async def health(
        self, service: str = SERVICE_NAME, *, timeout: float | None = None
    ) -> HealthStatus:
        """The gateway's health for `service` (see RecommenderClient.health)."""
        try:
            return await self._call(self._health_check, service, timeout)
        except NotFound:
            return HealthStatus.SERVICE_UNKNOWN

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncRecommenderClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
