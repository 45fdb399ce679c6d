"""The gateway's edge through a real `logitrec serve`: per-request bounds refused before any work,
exact status codes with short messages, and one bounded access log line per request."""

import asyncio
import json
import logging
import re
import urllib.request
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from logitrec_client import NotFound, RecommenderClient
from logitrec_client.proto import recommender_pb2 as pb
from logitrec_client.proto import recommender_pb2_grpc

from logitrec import gateway_process
from serving.config import ServeConfig
from serving.errors import InvalidRequest, bounded, quote
from serving.grpc_handlers import add_servicer
from serving.metrics import GatewayMetrics
from serving.query import prepare_query
from serving.registry import load_version
from serving.service import RecommenderService, _answer_bytes

MESSAGE_BYTES = 1024 * 1024  # the gateway's message limit here: small, so answers can outgrow it
METHODS = {
    "Recommend": pb.RecommendResponse,
    "RecommendBatch": pb.RecommendBatchResponse,
    "Score": pb.ScoreResponse,
    "GetModelInfo": pb.GetModelInfoResponse,
}


@pytest.fixture(scope="module")
def gateway(tiny_repository, tmp_path_factory):
    config = tmp_path_factory.mktemp("edge-config") / "serve.toml"
    config.write_text(f"[serve]\nmax_message_bytes = {MESSAGE_BYTES}\n")
    args = ("--config", config, "--drain-seconds", 0)  # stop at once: nothing to drain here
    with gateway_process.running_gateway(tiny_repository, *args) as running:
        channel = grpc.insecure_channel(running.target)
        yield SimpleNamespace(
            stub=recommender_pb2_grpc.RecommenderServiceStub(channel),
            channel=channel,
            target=running.target,
            metrics_url=running.metrics_url,
            log_path=running.log_path,
        )
        channel.close()


def metric(gateway, name: str, **labels) -> float:
    """One sample of the gateway's /metrics (0 when it has not appeared yet)."""
    text = urllib.request.urlopen(gateway.metrics_url, timeout=10).read().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(f"{name}{{{wanted}}}" if wanted else name) + r" (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def refusal(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details() or ""


def events(*item_ids):
    return [pb.Event(item_id=str(i)) for i in item_ids]


def access_lines(gateway, since: int) -> list[dict]:
    """The access log lines written after byte `since` of the gateway's log."""
    with open(gateway.log_path, "rb") as log:
        log.seek(since)
        lines = [json.loads(line) for line in log.read().splitlines() if line.startswith(b"{")]
    return [line for line in lines if line["logger"] == "logitrec.access"]


def test_an_undecodable_body_is_invalid_argument_with_one_short_line(gateway):
    before = gateway.log_path.stat().st_size
    refused = metric(gateway, "logitrec_request_failures_total", reason="invalid_argument")
    for method in METHODS:
        call = gateway.channel.unary_unary(
            f"/logitrec.v1.RecommenderService/{method}",
            request_serializer=lambda body: body,
            response_deserializer=lambda body: body,
        )
        code, details = refusal(lambda call=call: call(b"\xff\xff\xff\xff", timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert details.startswith("request: not a valid logitrec.v1.") and len(details) < 120
    lines = access_lines(gateway, before)
    assert [line["method"] for line in lines] == list(METHODS)
    assert {line["status"] for line in lines} == {"INVALID_ARGUMENT"}
    assert {line["level"] for line in lines} == {"info"}
    log = gateway.log_path.read_bytes()[before:]
    assert b"Traceback" not in log and b"DecodeError" not in log
    assert metric(gateway, "logitrec_request_failures_total", reason="invalid_argument") == (
        refused + len(METHODS)
    )
    assert len(gateway.stub.Recommend(pb.RecommendRequest(history=events(3), k=2)).items) == 2


def test_a_huge_model_name_is_not_found_once_with_a_short_message(gateway):
    name = "m" * 20_000
    code, details = refusal(
        lambda: gateway.stub.Recommend(pb.RecommendRequest(model=name, k=3), timeout=10)
    )
    assert code == grpc.StatusCode.NOT_FOUND and details.startswith("model: 'mmm")
    assert len(details) < 200 and "..." in details and "'tiny'" in details
    # The SDK sees NOT_FOUND, not an overload to retry: exactly one request reached the gateway.
    calls = metric(gateway, "logitrec_request_duration_seconds_count", method="Recommend")
    with RecommenderClient(gateway.target) as client, pytest.raises(NotFound):
        client.recommend(["3"], k=3, model=name, timeout=10)
    assert metric(gateway, "logitrec_request_duration_seconds_count", method="Recommend") == (
        calls + 1
    )


def test_a_batch_too_large_is_refused_before_any_work(gateway):
    batches = metric(gateway, "logitrec_batch_size_count")
    requests = [pb.RecommendRequest(history=events(3, 7), k=500) for _ in range(1024)]
    code, details = refusal(
        lambda: gateway.stub.RecommendBatch(pb.RecommendBatchRequest(requests=requests), timeout=30)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "requests: the sum of k, 512000, exceeds the limit of 100000"
    # Within the item bound, but the answer could not be sent in one 1 MiB message.
    requests = [pb.RecommendRequest(history=events(3, 7), k=58) for _ in range(1024)]
    code, details = refusal(
        lambda: gateway.stub.RecommendBatch(pb.RecommendBatchRequest(requests=requests), timeout=30)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("requests: the answer could take") and f"{MESSAGE_BYTES}" in details
    too_many = [pb.RecommendRequest(history=events(3), k=1)] * 1025
    code, details = refusal(
        lambda: gateway.stub.RecommendBatch(pb.RecommendBatchRequest(requests=too_many))
    )
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "requests: 1025 requests exceed the limit of 1024",
    )
    assert metric(gateway, "logitrec_batch_size_count") == batches, "a refused batch ran"


def test_the_answer_size_estimate_never_falls_short(gateway, tiny_repository):
    model = load_version(tiny_repository, "tiny", 1)
    requests = [
        pb.RecommendRequest(history=events(i + 1, "unknown-é" * 40), k=58, request_id="r" * 300)
        for i in range(16)
    ]
    answer = gateway.stub.RecommendBatch(pb.RecommendBatchRequest(requests=requests), timeout=30)
    estimate = sum(
        _answer_bytes(r, model, prepare_query(model, [e.item_id for e in r.history], k=r.k))
        for r in requests
    )
    assert len(answer.responses) == 16 and all(len(a.items) == 58 for a in answer.responses)
    assert answer.ByteSize() <= estimate


@pytest.mark.parametrize("field", ["exclude_item_ids", "allowed_item_ids", "item_ids", "history"])
def test_id_lists_above_their_bound_are_refused_naming_the_field(gateway, field):
    def ask(ids):
        if field == "item_ids":
            return gateway.stub.Score(pb.ScoreRequest(history=events(3), item_ids=ids), timeout=30)
        if field == "history":
            return gateway.stub.Recommend(pb.RecommendRequest(history=events(*ids), k=3))
        return gateway.stub.Recommend(pb.RecommendRequest(history=events(3), k=3, **{field: ids}))

    ids = ["1", "2", "4", "5"] + [f"x{i}" for i in range(9_997)]  # 10,001: one too many
    code, details = refusal(lambda: ask(ids))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(f"{field}: 10001 ") and details.endswith("exceed the limit of 10000")
    assert len(ask(ids[:10_000]).items) > 0  # at the bound: served


def test_k_above_max_k_is_refused(gateway):
    code, details = refusal(
        lambda: gateway.stub.Recommend(pb.RecommendRequest(history=events(3), k=1001))
    )
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "k: 1001 exceeds the limit of 1000",
    )


def bad_requests(long: str):
    """Refused requests that each carry a 50,000-character value in another field."""
    return [
        pb.RecommendRequest(history=events(long), k=0, request_id=long, user_id=long),
        pb.RecommendRequest(history=events(3), k=3, exclude_item_ids=[long, long]),
        pb.RecommendRequest(history=events(3), k=3, model=long),
        pb.RecommendRequest(history=events(3), k=3, context={long: "1"}, user_id=long),
    ]


def test_the_log_stays_bounded_under_bad_requests(gateway):
    before = gateway.log_path.stat().st_size
    long = "é" + "x" * 49_999
    sent = 0
    for i in range(50):
        for request in bad_requests(long[:-1] + str(i)):
            code, details = refusal(lambda r=request: gateway.stub.Recommend(r, timeout=10))
            assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
            assert len(details.encode()) <= 1024 and "x" * 65 not in details
            sent += 1
    grown = gateway.log_path.stat().st_size - before
    assert sent == 200 and grown < 200_000, f"{grown} bytes of log for {sent} bad requests"
    assert b"Traceback" not in gateway.log_path.read_bytes()[before:]
    lines = access_lines(gateway, before)
    assert len(lines) == sent  # one line per request
    assert all(len(line.get("user_id", "")) <= 67 for line in lines)


# -- _answer on its own: the outcomes a real server rarely shows on demand ---------------------


def service() -> RecommenderService:
    engine = SimpleNamespace(config=ServeConfig(), metrics=GatewayMetrics(), ready=True)
    return RecommenderService(engine)


class Context:
    """The one thing _answer asks of a grpc.aio.ServicerContext: abort."""

    async def abort(self, code, message):
        raise RuntimeError(f"aborted {code.name}: {message}")


def test_a_cancelled_call_leaves_its_access_line(caplog):
    recommender = service()

    async def caller_left():
        raise asyncio.CancelledError

    request = pb.RecommendRequest(request_id="gone", model="tiny")
    with caplog.at_level(logging.INFO, "logitrec.access"), pytest.raises(asyncio.CancelledError):
        asyncio.run(recommender._answer("Recommend", Context(), request, caller_left()))
    (record,) = caplog.records
    assert (record.status, record.reason, record.request_id) == ("CANCELLED", "cancelled", "gone")
    assert record.levelno == logging.INFO and not record.exc_info
    failures = recommender.metrics.failures.labels("cancelled")._value.get()
    assert failures == 1


def test_only_an_internal_error_logs_a_traceback(caplog):
    recommender = service()

    async def broken():
        raise ZeroDivisionError("a bug of ours")

    async def refused():
        raise InvalidRequest("k", "must be at least 1, got 0")

    with caplog.at_level(logging.INFO, "logitrec.access"):
        for work in (broken(), refused()):
            with pytest.raises(RuntimeError, match="aborted"):
                asyncio.run(
                    recommender._answer("Recommend", Context(), pb.RecommendRequest(), work)
                )
    internal, invalid = caplog.records
    assert internal.status == "INTERNAL" and internal.levelno == logging.ERROR
    assert internal.exc_info and internal.exc_info[0] is ZeroDivisionError
    assert internal.error == "internal error (see the gateway log)"
    assert invalid.status == "INVALID_ARGUMENT" and invalid.levelno == logging.INFO
    assert not invalid.exc_info and invalid.error == "k: must be at least 1, got 0"


def test_an_answered_call_logs_model_version_and_stages(caplog):
    recommender = service()
    timings = pb.Timings(queue_seconds=0.5, encode_seconds=0.25, score_seconds=0.125)

    async def answered():
        return pb.RecommendResponse(model="tiny", model_version=3, timings=timings, request_id="r")

    with caplog.at_level(logging.INFO, "logitrec.access"):
        asyncio.run(recommender._answer("Recommend", Context(), pb.RecommendRequest(), answered()))
    (record,) = caplog.records
    assert (record.status, record.model, record.version, record.request_id) == (
        "OK",
        "tiny",
        3,
        "r",
    )
    assert record.stages == {"queue": 0.5, "encode": 0.25, "retrieve": 0.0, "score": 0.125}


def test_quoted_values_and_messages_are_bounded():
    assert quote("abc") == "'abc'"
    assert quote("é" * 100) == repr("é" * 64) + "..."
    message = bounded("x" * 5000 + "é")
    assert len(message.encode()) <= 1024 and message.endswith("...")
    assert bounded("short") == "short"


# -- add_servicer on a real grpc.aio server, for every shape of method --------------------------


class Health(health_pb2_grpc.HealthServicer):
    async def Check(self, request, context):  # unary -> unary
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def Watch(self, request, context):  # unary -> stream
        yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


class Reflection(reflection_pb2_grpc.ServerReflectionServicer):
    async def ServerReflectionInfo(self, requests, context):  # stream -> stream
        async for request in requests:
            yield reflection_pb2.ServerReflectionResponse(valid_host=request.host)


async def _guarded_calls(body: bytes) -> list:
    """(method, status name) of each method called with `body`, on a fresh server."""
    server = grpc.aio.server()
    add_servicer(server, Health(), health_pb2.DESCRIPTOR.services_by_name["Health"])
    reflection = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
    add_servicer(server, Reflection(), reflection)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    outcomes = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            identity = {"request_serializer": bytes, "response_deserializer": bytes}
            calls = {
                "Check": channel.unary_unary("/grpc.health.v1.Health/Check", **identity),
                "Watch": channel.unary_stream("/grpc.health.v1.Health/Watch", **identity),
                "ServerReflectionInfo": channel.stream_stream(
                    f"/{reflection.full_name}/ServerReflectionInfo", **identity
                ),
            }
            for name, call in calls.items():
                try:
                    if name == "Check":
                        await call(body, timeout=10)
                    else:
                        argument = body if name == "Watch" else iter([body])
                        [_ async for _ in call(argument, timeout=10)]
                    outcomes.append((name, "OK"))
                except grpc.aio.AioRpcError as error:
                    outcomes.append((name, error.code().name))
    finally:
        await server.stop(None)
    return outcomes


def test_add_servicer_refuses_undecodable_bodies_for_every_shape_of_method():
    assert asyncio.run(_guarded_calls(b"\xff\xff\xff")) == [
        ("Check", "INVALID_ARGUMENT"),
        ("Watch", "INVALID_ARGUMENT"),
        ("ServerReflectionInfo", "INVALID_ARGUMENT"),
    ]
    valid = reflection_pb2.ServerReflectionRequest(host="h").SerializeToString()
    assert asyncio.run(_guarded_calls(valid)) == [
        ("Check", "OK"),
        ("Watch", "OK"),
        ("ServerReflectionInfo", "OK"),
    ]
