"""logitrec.v1.RecommenderService over the engine: proto in, proto out, errors mapped once."""

import asyncio
import logging
import time
import uuid

import grpc
from logitrec_client._proto.logitrec.v1 import recommender_pb2 as pb
from logitrec_client._proto.logitrec.v1 import recommender_pb2_grpc

from serving import pipeline
from serving.engine import Answer, Engine
from serving.errors import BackendUnavailable, InvalidRequest, status_of
from serving.registry import ModelVersion

log = logging.getLogger("logitrec.gateway")
MAX_BATCH_REQUESTS = 1024


class RecommenderService(recommender_pb2_grpc.RecommenderServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.config = engine.config
        self.metrics = engine.metrics

    # -- the one place where exceptions become gRPC statuses ------------------------------
    async def _answer(self, method: str, context: grpc.aio.ServicerContext, work):
        started = time.perf_counter()
        try:
            if not self.engine.ready:
                work.close()
                raise BackendUnavailable("the gateway is still loading its models")
            return await work
        except Exception as error:
            code, message, reason = status_of(error)
            self.metrics.failures.labels(reason).inc()
            if code == grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method)
            else:
                log.info("%s refused: %s (%s)", method, message, code.name)
            await context.abort(code, message)
        finally:
            self.metrics.request_duration.labels(method).observe(time.perf_counter() - started)

    # -- RPCs -------------------------------------------------------------------------------
    async def Recommend(self, request, context):
        return await self._answer("Recommend", context, self._recommend(request, context))

    async def RecommendBatch(self, request, context):
        return await self._answer(
            "RecommendBatch", context, self._recommend_batch(request, context)
        )

    async def Score(self, request, context):
        return await self._answer("Score", context, self._score(request, context))

    async def GetModelInfo(self, request, context):
        return await self._answer("GetModelInfo", context, self._model_info(request))

    # -- implementations --------------------------------------------------------------------
    def _deadline(self, context) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else time.monotonic() + remaining

    def _query(self, request: pb.RecommendRequest, deadline):
        if request.explain:
            raise InvalidRequest("explain", "explanations are not available in this version")
        model = self.engine.registry.get(request.model, request.model_version)
        query = pipeline.prepare_query(
            model,
            [event.item_id for event in request.history],
            context=dict(request.context),
            k=request.k,
            exclude_seen=request.exclude_seen if request.HasField("exclude_seen") else True,
            exclude_ids=list(request.exclude_item_ids),
            allowed_ids=list(request.allowed_item_ids),
            max_history=self.config.max_history,
        )
        query.deadline = deadline
        return model, query

    async def _recommend(self, request, context) -> pb.RecommendResponse:
        received = time.perf_counter()
        model, query = self._query(request, self._deadline(context))
        answer = await self.engine.submit(model, query)
        return self._response(request, model, query, answer, received)

    async def _recommend_batch(self, request, context) -> pb.RecommendBatchResponse:
        received = time.perf_counter()
        if len(request.requests) > MAX_BATCH_REQUESTS:
            raise InvalidRequest(
                "requests", f"{len(request.requests)} exceed the limit of {MAX_BATCH_REQUESTS}"
            )
        deadline = self._deadline(context)
        prepared = []
        for i, item in enumerate(request.requests):
            try:
                prepared.append(self._query(item, deadline))
            except InvalidRequest as error:  # say which request of the batch was wrong
                raise InvalidRequest(f"requests[{i}].{error.field}", error.problem) from None

        answers = await asyncio.gather(*(self.engine.submit(m, q) for m, q in prepared))
        return pb.RecommendBatchResponse(
            responses=[
                self._response(r, m, q, a, received)
                for r, (m, q), a in zip(request.requests, prepared, answers, strict=True)
            ]
        )

    def _response(self, request, model: ModelVersion, query, answer: Answer, received):
        ranked = answer.ranked
        probabilities = pipeline.softmax(ranked.logits.astype(float))
        items = [
            pb.RecommendedItem(
                item_id=str(model.item_ids[index - 1]),
                logit=float(logit),
                probability=float(p),
                rank=rank,
                title=model.titles[index - 1] or "",
            )
            for rank, (index, logit, p) in enumerate(
                zip(ranked.items, ranked.logits, probabilities, strict=True), start=1
            )
        ]
        return pb.RecommendResponse(
            items=items,
            model=model.name,
            model_version=model.version,
            unknown_item_ids=query.unknown_item_ids,
            popularity_fallback=query.fallback,
            history_truncated_to=query.truncated_to,
            timings=self._timings(answer, received),
            request_id=request.request_id or uuid.uuid4().hex,
        )

    def _timings(self, answer: Answer, received: float) -> pb.Timings:
        t = answer.timings
        return pb.Timings(
            queue_seconds=t.get("queue", 0.0),
            encode_seconds=t.get("encode", 0.0),
            retrieve_seconds=t.get("retrieve", 0.0),
            score_seconds=t.get("score", 0.0),
            total_seconds=time.perf_counter() - received,
        )

    async def _score(self, request, context) -> pb.ScoreResponse:
        received = time.perf_counter()
        model = self.engine.registry.get(request.model, request.model_version)
        item_ids = list(request.item_ids)
        query = pipeline.prepare_query(
            model,
            [event.item_id for event in request.history],
            context=dict(request.context),
            exclude_seen=False,
            score_ids=item_ids,
            max_history=self.config.max_history,
        )
        query.deadline = self._deadline(context)
        answer = await self.engine.submit(model, query)
        return pb.ScoreResponse(
            items=[
                pb.ScoredItem(item_id=str(model.item_ids[i - 1]), logit=float(v))
                for i, v in zip(answer.ranked.items, answer.ranked.logits, strict=True)
            ],
            model=model.name,
            model_version=model.version,
            unknown_item_ids=query.unknown_item_ids,
            unknown_scored_item_ids=pipeline.unknown_scored_ids(model, item_ids),
            timings=self._timings(answer, received),
            request_id=request.request_id or uuid.uuid4().hex,
        )

    async def _model_info(self, request) -> pb.GetModelInfoResponse:
        model = self.engine.registry.get(request.model, request.model_version)
        exact = self.engine.uses_exact_scoring(model)
        return pb.GetModelInfoResponse(
            model=model.name,
            model_version=model.version,
            loaded_versions=self.engine.registry.versions(model.name),
            num_items=model.num_items,
            hidden_size=model.hidden_size,
            max_length=model.max_length,
            context_features=model.context_features,
            index_type=model.index_type,
            backend=self.engine.backend.name,
            candidate_count=0 if exact else self.config.candidate_count,
        )
