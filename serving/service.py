"""logitrec.v1.RecommenderService over the engine: proto in, proto out, errors mapped once."""

import asyncio
import logging
import time
import uuid

import grpc
from logitrec_client.proto import recommender_pb2 as pb
from logitrec_client.proto import recommender_pb2_grpc

from serving.auth import CALLER
from serving.config import rerank_defaults
from serving.engine import Answer, Engine
from serving.errors import BackendUnavailable, InvalidRequest, status_of
from serving.grpc_handlers import Undecodable
from serving.logs import cut
from serving.query import (
    Query,
    check_count,
    item_ids_of,
    prepare_query,
    ranked_items,
    unknown_scored_ids,
)
from serving.registry import ModelVersion
from serving.rerank import MetadataFilter, RerankSettings

access_log = logging.getLogger("logitrec.access")
ERROR_CHARS = 256  # of a refusal's message in its access line
# Callers' mistakes and their own departures are routine (info), and so are overload refusals:
# logging each at warning would add work exactly when the gateway has none to spare (the
# failures metric counts them). An unreachable backend needs an operator's eye (warning); only
# INTERNAL is a fault of ours (error, traceback).
LOG_LEVELS = {
    grpc.StatusCode.OK: logging.INFO,
    grpc.StatusCode.RESOURCE_EXHAUSTED: logging.INFO,
    grpc.StatusCode.INVALID_ARGUMENT: logging.INFO,
    grpc.StatusCode.NOT_FOUND: logging.INFO,
    grpc.StatusCode.CANCELLED: logging.INFO,
    grpc.StatusCode.DEADLINE_EXCEEDED: logging.INFO,
    grpc.StatusCode.INTERNAL: logging.ERROR,
}
# One RecommendResponse without its items, unknown ids, model name and request id, at most:
# version, flags, timings and framing.
RESPONSE_FRAMING_BYTES = 128
GENERATED_ID_BYTES = 32  # a request id the gateway makes up (uuid4().hex)
MAX_FILTERS = 16  # metadata filters per request
MAX_FILTER_VALUES = 1_000  # values in one filter's any_of
DEFAULT_CONTRIBUTORS = 3  # explanation entries per returned item unless asked otherwise
MAX_CONTRIBUTORS = 20


class RecommenderService(recommender_pb2_grpc.RecommenderServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.config = engine.config
        self.metrics = engine.metrics

    # -- the one place where exceptions become gRPC statuses ------------------------------
    async def _answer(
        self, method: str, context: grpc.aio.ServicerContext, request, work, *, loaded=True
    ):
        """Await `work` (the RPC's coroutine): its response, or its error as a status. Every
        request leaves one access line and its metrics, whatever the outcome."""
        started = time.perf_counter()
        try:
            if loaded and not self.engine.ready:
                work.close()
                raise BackendUnavailable("the gateway is still loading its models")
            response = await work
        except asyncio.CancelledError:
            # The caller went away or its deadline passed: gRPC ends the call, we count it.
            self._record(method, request, None, started, grpc.StatusCode.CANCELLED, "cancelled")
            raise
        except Exception as error:
            code, message, reason = status_of(error)
            self._record(method, request, None, started, code, reason, (message, error))
            await context.abort(code, message)
        self._record(method, request, response, started, grpc.StatusCode.OK)
        return response

    def _record(self, method, request, response, started, code, reason="", failure=None) -> None:
        """Metrics and the access line (caller's strings cut short) of one finished request."""
        seconds = time.perf_counter() - started
        self.metrics.request_duration.labels(method).observe(seconds)
        if reason:
            self.metrics.failures.labels(reason).inc()
        level = LOG_LEVELS.get(code, logging.WARNING)
        if not access_log.isEnabledFor(level):
            return  # the line would be dropped: skip building it (the hot path's saving)
        message, error = failure or ("", None)
        fields = {
            "method": method,
            "request_id": cut(
                getattr(response, "request_id", "") or getattr(request, "request_id", "")
            ),
            "user_id": cut(getattr(request, "user_id", "")),
            "status": code.name,
            "reason": reason,
            "seconds": round(seconds, 6),
            "error": cut(message, ERROR_CHARS),
            "caller": CALLER.get(),
            **_served_by(request, response),
        }
        internal = code == grpc.StatusCode.INTERNAL
        access_log.log(level, "%s %s", method, code.name, extra=fields, exc_info=internal and error)

    async def undecodable(self, method: str, request: Undecodable, context) -> None:
        """A body that is not the method's message (see grpc_handlers): INVALID_ARGUMENT,
        counted and logged like every refused request."""
        await self._answer(method, context, request, self._refuse(request), loaded=False)

    async def _refuse(self, request: Undecodable):
        raise InvalidRequest("request", request.problem)

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
        """The request's model and its validated Query (Recommend and Score share this).
        Repeated fields go in as they are: their sizes are checked before anything is copied."""
        check_count("history", request.history, self.config.max_history, "events")
        model = self.engine.registry.get(request.model, request.model_version)
        query = prepare_query(
            model,
            [event.item_id for event in request.history],
            context=request.context,
            max_history=self.config.max_history,
            max_ids=self.config.max_ids,
            max_k=self.config.max_k,
            deadline=deadline,
            **options,
        )
        return model, query

    def _recommend_query(self, request: pb.RecommendRequest, deadline):
        check_count("filters", request.filters, MAX_FILTERS, "filters")
        model_name = request.model or self.engine.registry.default_model
        return self._query(
            request,
            deadline,
            k=request.k,
            exclude_seen=request.exclude_seen if request.HasField("exclude_seen") else True,
            exclude_ids=request.exclude_item_ids,
            allowed_ids=request.allowed_item_ids,
            rerank=rerank_settings(request, rerank_defaults(self.config.rerank, model_name)),
            filters=metadata_filters(request.filters),
            explain=self._explain_count(request),
        )

    def _explain_count(self, request: pb.RecommendRequest) -> int:
        """Contributors per item when the request asks for explanations, else 0; bounded."""
        if not request.explain:
            if request.explain_contributors:
                raise InvalidRequest("explain_contributors", "needs explain: true")
            return 0
        if request.k > self.config.max_explain_k:
            raise InvalidRequest(
                "k", f"{request.k} exceeds the limit of {self.config.max_explain_k} with explain"
            )
        count = request.explain_contributors or DEFAULT_CONTRIBUTORS
        if not 1 <= count <= MAX_CONTRIBUTORS:
            raise InvalidRequest(
                "explain_contributors", f"expected 1 to {MAX_CONTRIBUTORS}, got {count}"
            )
        return count

    def _check_answer_size(self, field: str, requests, prepared) -> None:
        """Refuse, before any work, what could not be sent back in one message."""
        size = sum(_answer_bytes(r, m, q) for r, (m, q) in zip(requests, prepared, strict=True))
        if size > self.config.max_message_bytes:
            raise InvalidRequest(
                field,
                f"the answer could take {size} bytes, more than the {self.config.max_message_bytes}"
                " a message may carry: ask for fewer items",
            )

    async def _recommend(self, request, context) -> pb.RecommendResponse:
        received = time.perf_counter()
        model, query = self._recommend_query(request, self._deadline(context))
        self._check_answer_size("k", [request], [(model, query)])
        answer = await self.engine.submit(model, query)
        return self._response(request, model, query, answer, received)

    async def _recommend_batch(self, request, context) -> pb.RecommendBatchResponse:
        received = time.perf_counter()
        check_count("requests", request.requests, self.config.max_batch_requests, "requests")
        items = sum(max(item.k, 0) for item in request.requests)
        if items > self.config.max_batch_items:
            raise InvalidRequest(
                "requests",
                f"the sum of k, {items}, exceeds the limit of {self.config.max_batch_items}",
            )
        deadline = self._deadline(context)
        prepared = []
        for i, item in enumerate(request.requests):
            try:
                prepared.append(self._recommend_query(item, deadline))
            except InvalidRequest as error:  # say which request of the batch was wrong
                raise InvalidRequest(f"requests[{i}].{error.field}", error.problem) from None
        self._check_answer_size("requests", request.requests, prepared)

        answers = await asyncio.gather(*(self.engine.submit(m, q) for m, q in prepared))
        return pb.RecommendBatchResponse(
            responses=[
                self._response(r, m, q, a, received)
                for r, (m, q), a in zip(request.requests, prepared, answers, strict=True)
            ]
        )

    def _response(self, request, model: ModelVersion, query: Query, answer: Answer, received):
        items = ranked_items(model, answer.ranked.items, answer.ranked.logits)
        explanations = answer.explanations or [()] * len(items)
        return pb.RecommendResponse(
            items=[
                pb.RecommendedItem(
                    item_id=i.item_id,
                    logit=i.logit,
                    probability=i.probability,
                    rank=i.rank,
                    title=i.title,
                    contributions=[_contribution(model, query, r, d) for r, d in explained],
                )
                for i, explained in zip(items, explanations, strict=True)
            ],
            filters_widened=answer.widened,
            eligible_items=query.eligible_items,
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
            rerank_seconds=t.get("rerank", 0.0),
            explain_seconds=t.get("explain", 0.0),
        )

    async def _score(self, request, context) -> pb.ScoreResponse:
        received = time.perf_counter()
        item_ids = request.item_ids
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
            metadata_fields=list(model.metadata.fields) if model.metadata is not None else [],
        )


def _answer_bytes(request, model: ModelVersion, query: Query) -> int:
    """At most how large one RecommendResponse to `query` can be (conservative)."""
    echoed = sum(len(item_id.encode()) + 4 for item_id in query.unknown_item_ids)
    request_id = max(len(request.request_id.encode()), GENERATED_ID_BYTES)
    named = len(model.name.encode()) + request_id + echoed
    # A contribution names a history item (an item's bytes) or a context feature and value.
    per_item = model.answer_item_bytes * (1 + query.explain)
    return RESPONSE_FRAMING_BYTES + named + query.k * per_item


def rerank_settings(request: pb.RecommendRequest, defaults: dict) -> RerankSettings | None:
    """The model's defaults overridden by the fields the request set; errors name the field."""
    given = dict(defaults)
    if request.HasField("rerank"):
        asked = request.rerank
        for name in ("popularity_beta", "mmr_lambda", "category_cap", "calibration"):
            if asked.HasField(name):
                given[name] = getattr(asked, name)
        if asked.cap_field:
            given["cap_field"] = asked.cap_field
    if not given:
        return None
    settings = RerankSettings(**given)
    try:
        settings.validate()
    except ValueError as error:
        raise InvalidRequest("rerank", str(error)) from None
    return settings


def metadata_filters(filters) -> list[MetadataFilter]:
    """Proto filters -> MetadataFilter; the shape is checked here, the field by the model."""
    converted = []
    for position, condition in enumerate(filters):
        name = f"filters[{position}]"
        if not condition.field:
            raise InvalidRequest(f"{name}.field", "empty: name an item metadata field")
        bounded = condition.HasField("at_least") or condition.HasField("at_most")
        if bool(condition.any_of) == bounded:
            raise InvalidRequest(name, "give either any_of (a category) or at_least/at_most")
        check_count(f"{name}.any_of", condition.any_of, MAX_FILTER_VALUES, "values")
        converted.append(
            MetadataFilter(
                field=condition.field,
                any_of=tuple(condition.any_of),
                at_least=condition.at_least if condition.HasField("at_least") else None,
                at_most=condition.at_most if condition.HasField("at_most") else None,
            )
        )
    return converted


def _contribution(model: ModelVersion, query: Query, removal, delta: float) -> pb.Contribution:
    """One explanation entry in the caller's terms."""
    if removal.kind == "item":
        return pb.Contribution(
            item_id=str(model.item_ids[removal.item - 1]),
            title=model.titles[removal.item - 1] or "",
            logit_delta=float(delta),
            history_position=removal.position,
        )
    feature = model.context_features[removal.position]
    lookup = model.context_lookup[feature]
    value = next((v for v, i in lookup.items() if i == query.context[removal.position]), "")
    return pb.Contribution(
        context_feature=feature,
        context_value=value,
        logit_delta=float(delta),
        history_position=-1,
    )


def _stages(responses) -> dict[str, float] | None:
    """Stage seconds of the answered request(s); for a batch, the slowest of each stage."""
    timings = [r.timings for r in responses if r.HasField("timings")]
    if not timings:
        return None
    return {
        stage: round(max(getattr(t, f"{stage}_seconds") for t in timings), 6)
        for stage in ("queue", "encode", "retrieve", "score")
    }


def _served_by(request, response) -> dict:
    """The access line's model, version and stage timings: from the answer when there is one,
    else what the caller asked for."""
    if response is None:
        version = getattr(request, "model_version", 0)
        return {"model": cut(getattr(request, "model", "")), "version": version or None}
    answers = list(getattr(response, "responses", ()))
    fields = {"requests": len(answers)} if hasattr(response, "responses") else {}
    first = answers[0] if answers else response
    if hasattr(first, "model"):
        fields.update(model=first.model, version=first.model_version)
    if hasattr(first, "timings"):
        fields["stages"] = _stages(answers or [response])
    return fields
