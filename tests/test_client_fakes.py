"""A stand-in gateway for the client SDK's tests: the real proto, a scripted servicer, real health.

Only the client's tests use it; the gateway's own tests start the real server. Imported by the
other test_client_* files (pytest puts tests/ on sys.path); it holds no tests itself.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from logitrec_client.proto import recommender_pb2 as pb
from logitrec_client.proto import recommender_pb2_grpc

SERVICE = "logitrec.v1.RecommenderService"
CATALOG = {
    "i1": "Toy Story (1995)",
    "i2": "Jumanji (1995)",
    "i3": "Heat (1995)",
    "i4": "Casino (1995)",
    "i5": "Sabrina (1995)",
}
TIMINGS = pb.Timings(
    queue_seconds=0.001,
    encode_seconds=0.002,
    retrieve_seconds=0.003,
    score_seconds=0.004,
    total_seconds=0.012,
)
# Long enough to outlast any deadline a test sets; released at teardown anyway.
HOLD_LIMIT_S = 30


class FakeRecommender(recommender_pb2_grpc.RecommenderServiceServicer):
    """Answers from CATALOG (logit 5 for i1 down to 1 for i5), and records what it was sent.

    `failures` are answered in order, one per attempt, before it succeeds; `hold` makes every
    call wait until the fixture releases it (for deadline tests). The model "missing" is unknown.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.metadata: list[dict[str, str]] = []
        self.failures: list[tuple[grpc.StatusCode, str]] = []
        self.hold = False
        self.released = threading.Event()
        self._lock = threading.Lock()

    @property
    def attempts(self) -> int:
        return len(self.calls)

    def requests(self, method: str) -> list:
        return [request for name, request in self.calls if name == method]

    def _arrive(self, method: str, request: object, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls.append((method, request))
            self.metadata.append(dict(context.invocation_metadata()))
            failure = self.failures.pop(0) if self.failures else None
        if failure:
            context.abort(*failure)
        if self.hold:
            self.released.wait(HOLD_LIMIT_S)
        if getattr(request, "model", "") == "missing":
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown model 'missing'")

    @staticmethod
    def _logit(item_id: str) -> float:
        return float(6 - int(item_id[1:]))

    def _recommend(self, request: pb.RecommendRequest) -> pb.RecommendResponse:
        history = [event.item_id for event in request.history]
        candidates = list(request.allowed_item_ids) or list(CATALOG)
        seen = set(history) if request.exclude_seen else set()
        chosen = [i for i in candidates if i not in seen and i not in request.exclude_item_ids]
        chosen = chosen[: request.k]
        total = sum(math.exp(self._logit(i)) for i in chosen)
        return pb.RecommendResponse(
            items=[
                pb.RecommendedItem(
                    item_id=item_id,
                    logit=self._logit(item_id),
                    probability=math.exp(self._logit(item_id)) / total,
                    rank=rank,
                    title=CATALOG[item_id],
                    contributions=self._contributions(request, history),
                )
                for rank, item_id in enumerate(chosen, start=1)
            ],
            model=request.model or "tiny",
            model_version=request.model_version or 3,
            unknown_item_ids=[i for i in history if i not in CATALOG],
            popularity_fallback=not any(i in CATALOG for i in history),
            history_truncated_to=2 if len(history) > 2 else 0,
            timings=TIMINGS,
            request_id=request.request_id or "generated-id",
        )

    @staticmethod
    def _contributions(request: pb.RecommendRequest, history: list[str]) -> list:
        """With explain: the oldest known history item pushed every item up by 1.5."""
        known = [i for i in history if i in CATALOG]
        if not request.explain or not known:
            return []
        return [pb.Contribution(item_id=known[0], title=CATALOG[known[0]], logit_delta=1.5)]

    def Recommend(self, request, context):
        self._arrive("Recommend", request, context)
        return self._recommend(request)

    def RecommendBatch(self, request, context):
        self._arrive("RecommendBatch", request, context)
        return pb.RecommendBatchResponse(responses=[self._recommend(r) for r in request.requests])

    def Score(self, request, context):
        self._arrive("Score", request, context)
        return pb.ScoreResponse(
            items=[
                pb.ScoredItem(item_id=i, logit=self._logit(i))
                for i in request.item_ids
                if i in CATALOG
            ],
            model=request.model or "tiny",
            model_version=3,
            unknown_item_ids=[e.item_id for e in request.history if e.item_id not in CATALOG],
            unknown_scored_item_ids=[i for i in request.item_ids if i not in CATALOG],
            timings=TIMINGS,
            request_id=request.request_id or "generated-id",
        )

    def GetModelInfo(self, request, context):
        self._arrive("GetModelInfo", request, context)
        return pb.GetModelInfoResponse(
            model=request.model or "tiny",
            model_version=request.model_version or 3,
            loaded_versions=[2, 3],
            num_items=len(CATALOG),
            hidden_size=32,
            max_length=16,
            context_features=["gender", "age"],
            index_type="Flat",
            backend="embedded",
            candidate_count=0,
        )


@dataclass(frozen=True)
class Gateway:
    """A running stand-in gateway: its address, its servicer and its health servicer."""

    target: str
    servicer: FakeRecommender
    health: health.HealthServicer


@contextmanager
def running_gateway(credentials: grpc.ServerCredentials | None = None) -> Iterator[Gateway]:
    """Serve a FakeRecommender and the standard health service on a free local port."""
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    servicer = FakeRecommender()
    recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    for service in ("", SERVICE):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = "127.0.0.1:0"
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    server.start()
    try:
        yield Gateway(f"127.0.0.1:{port}", servicer, health_servicer)
    finally:
        servicer.released.set()
        server.stop(grace=None)


# Named by `name=` so that test files can import it without their `gateway` argument shadowing it.
@pytest.fixture(name="gateway")
def gateway_fixture() -> Iterator[Gateway]:
    """A plaintext stand-in gateway, fresh for each test."""
    with running_gateway() as running:
        yield running
