"""logitrec.v1.RecommenderService over the engine: proto in, proto out, errors mapped once."""

import asyncio
import logging
import time
import uuid

import grpc
from logitrec_client.proto import recommender_pb2 as pb
from logitrec_client.proto import recommender_pb2_grpc

from serving.engine import Answer, Engine
from serving.errors import BackendUnavailable, InvalidRequest, status_of
from serving.query import Query, item_ids_of, prepare_query, ranked_items, unknown_scored_ids
from serving.registry import ModelVersion

log = logging.getLogger("logitrec.gateway")
MAX_BATCH_REQUESTS = 1024
LOGGED_ID_CHARS = 64  # request_id and user_id in failure logs: enough to trace, never unbounded


class RecommenderService(recommender_pb2_grpc.RecommenderServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.config = engine.config
        self.metrics = engine.metrics

    # -- the one place where exceptions become gRPC statuses ------------------------------
    async def _answer(self, method: str, context: grpc.aio.ServicerContext, request, work):
        started = time.perf_counter()
        try:
            if not self.engine.ready:
                work.close()
                raise BackendUnavailable("the gateway is still loading its models")
            return await work
        except asyncio.CancelledError:
            # The caller went away or its deadline passed: gRPC ends the call, we count it.
            self.metrics.failures.labels("cancelled").inc()
            raise
        except Exception as error:
            code, message, reason = status_of(error)
            self.metrics.failures.labels(reason).inc()
            # The caller's ids, cut short, so a failure can be traced to who asked.
            ids = {
                name: getattr(request, name, "")[:LOGGED_ID_CHARS]
                for name in ("request_id", "user_id")
            }
            if code == grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method, extra=ids)
            else:
                log.info("%s refused: %s (%s)", method, message, code.name, extra=ids)
            await context.abort(code, message)
        finally:
            self.metrics.request_duration.labels(method).observe(time.perf_counter() - started)

    # -- RPCs -------------------------------------------------------------------------------
    async def Recommend(self, request, context):
        return await self._answer("Recommend", context, request, self._recommend(request, context))

    async def RecommendBatch(self, request, context):
        return await self._answer(
            "RecommendBatch", context, request, self._recommend_batch(request, context)
        )

    async def Score(self, request, context):
        return await self._answer("Score", context, request, self._score(request, context))

    async def GetModelInfo(self, request, context):
        return await self._answer("GetModelInfo", context, request, self._model_info(request))

    # -- implementations --------------------------------------------------------------------
    def _deadline(self, context) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else time.monotonic() + remaining

    def _query(self, request, deadline, **options) -> tuple[ModelVersion, Query]:
        """The request's model and its validated Query (Recommend and Score share this)."""
        model = self.engine.registry.get(request.model, request.model_version)
        query = prepare_query(
            model,
            [event.item_id for event in request.history],
            context=dict(request.context),
            max_history=self.config.max_history,
            deadline=deadline,
            **options,
        )
        return model, query

    def _recommend_query(self, request: pb.RecommendRequest, deadline):
        if request.explain:
            raise InvalidRequest("explain", "explanations are not available in this version")
        return self._query(
            request,
            deadline,
            k=request.k,
            exclude_seen=request.exclude_seen if request.HasField("exclude_seen") else True,
            exclude_ids=list(request.exclude_item_ids),
            allowed_ids=list(request.allowed_item_ids),
        )

    async def _recommend(self, request, context) -> pb.RecommendResponse:
        received = time.perf_counter()
        model, query = self._recommend_query(request, self._deadline(context))
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
                prepared.append(self._recommend_query(item, deadline))
            except InvalidRequest as error:  # say which request of the batch was wrong
                raise InvalidRequest(f"requests[{i}].{error.field}", error.problem) from None

        answers = await asyncio.gather(*(self.engine.submit(m, q) for m, q in prepared))
        return pb.RecommendBatchResponse(
            responses=[
                self._response(r, m, q, a, received)
                for r, (m, q), a in zip(request.requests, prepared, answers, strict=True)
            ]
        )

    def _response(self, request, model: ModelVersion, query: Query, answer: Answer, received):
        items = ranked_items(model, answer.ranked.items, answer.ranked.logits)
        return pb.RecommendResponse(
            items=[
                pb.RecommendedItem(
                    item_id=i.item_id,
                    logit=i.logit,
                    probability=i.probability,
                    rank=i.rank,
                    title=i.title,
                )
                for i in items
            ],
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
        item_ids = list(request.item_ids)
        model, query = self._query(
            request, self._deadline(context), exclude_seen=False, score_ids=item_ids
        )
        answer = await self.engine.submit(model, query)
        scored = zip(item_ids_of(model, answer.ranked.items), answer.ranked.logits, strict=True)
        return pb.ScoreResponse(
            items=[pb.ScoredItem(item_id=i, logit=float(v)) for i, v in scored],
            model=model.name,
            model_version=model.version,
            unknown_item_ids=query.unknown_item_ids,
            unknown_scored_item_ids=unknown_scored_ids(model, item_ids),
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
