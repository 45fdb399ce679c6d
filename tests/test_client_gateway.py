"""The client SDK against the real gateway (a `logitrec serve` process on an exported model)."""

import socket
import urllib.request

import grpc
import pytest
from conftest import running_gateway, spawn_gateway, stop_process
from logitrec_client import (
    NO_RETRIES,
    AsyncRecommenderClient,
    DeadlineExceeded,
    HealthStatus,
    InvalidRequest,
    NotFound,
    RecommenderClient,
    RecommendQuery,
    RetryPolicy,
    Unavailable,
)
from logitrec_client.proto import recommender_pb2 as pb
from logitrec_client.proto import recommender_pb2_grpc


@pytest.fixture(scope="module")
def repository(tiny_repository):
    return tiny_repository


@pytest.fixture(scope="module")
def target(repository):
    with running_gateway(repository) as (address, _, _process):
        yield address


def test_sync_calls_return_typed_results(target):
    with RecommenderClient(target) as client:
        assert client.health() == HealthStatus.SERVING
        result = client.recommend(["3", "17", "42"], k=5, request_id="abc")
        assert len(result) == 5 and [r.rank for r in result] == [1, 2, 3, 4, 5]
        assert result.model == "tiny" and result.model_version == 1 and result.request_id == "abc"
        assert not {"3", "17", "42"} & set(result.item_ids)
        assert all(r.title for r in result) and "Recommendation" not in str(result)
        scores = client.score(["3", "17", "42"], [result[0].item_id, "nope"])
        assert scores.items[0].logit == pytest.approx(result[0].logit, abs=1e-5)
        batch = client.recommend_batch(
            [RecommendQuery(history=["1"], k=3), RecommendQuery(history=["2", "3"], k=2)]
        )
        assert [len(b) for b in batch] == [3, 2]
        info = client.model_info()
        assert info.num_items == 60 and info.backend == "embedded"


@pytest.mark.asyncio
async def test_async_calls_agree_with_sync_ones(target):
    with RecommenderClient(target) as client:
        expected = client.recommend(["5", "6"], k=4).item_ids
    async with AsyncRecommenderClient(target) as client:
        got = await client.recommend(["5", "6"], k=4)
    assert got.item_ids == expected


def test_server_errors_become_the_sdk_exceptions(target):
    with RecommenderClient(target) as client:
        with pytest.raises(InvalidRequest, match="k: must be at least 1"):
            client.recommend(["1"], k=0)
        with pytest.raises(NotFound, match="model"):
            client.recommend(["1"], k=3, model="missing")
        assert len(client.recommend(["1"], k=3)) == 3  # the server kept serving


def scrape(metrics_url: str) -> dict[str, float]:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    samples = (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    return {name: float(value) for name, value in samples}


def test_a_deadline_that_passes_in_the_queue_costs_no_inference(repository):
    # Batches wait 1.5 s to fill: the first request's 0.3 s deadline passes while it is queued.
    # (Admission control would refuse it up front, seeing the wait: this is the path for
    # requests it admitted on an estimate that turned out wrong.)
    flags = ("--max-wait-ms", 1500, "--no-admission")
    with (
        running_gateway(repository, *flags) as (target, metrics_url, _process),
        RecommenderClient(target) as client,
    ):
        before = scrape(metrics_url)
        with pytest.raises(DeadlineExceeded):
            client.recommend(["1"], k=3, timeout=0.3)
        # The batcher is first-in first-out: once this answer is back, the expired one is settled.
        assert len(client.recommend(["2"], k=3, timeout=30)) == 3
        after = scrape(metrics_url)
    cancelled = 'logitrec_request_failures_total{reason="cancelled"}'
    assert after[cancelled] - before.get(cancelled, 0.0) == 1
    # One request went through the model: the expired one was dropped before inference.
    assert after["logitrec_batch_size_sum"] - before["logitrec_batch_size_sum"] == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_client_retries_bridge_a_gateway_restart(repository, tmp_path):
    port = free_port()
    patient = RetryPolicy(max_attempts=5, initial_backoff_s=0.5, max_backoff_s=4.0)
    with RecommenderClient(f"127.0.0.1:{port}", retry=patient) as client:
        with running_gateway(repository, "--port", port):
            before = client.recommend(["3", "4"], k=5).item_ids
        # Restarting: the new process takes seconds to bind and load. The call goes out at once;
        # its first attempts meet a closed port or a gateway still loading (UNAVAILABLE both),
        # and the retries reach the gateway once it is back. Same client, same channel.
        process, _, _ = spawn_gateway(repository, tmp_path, "--port", port)
        try:
            assert client.recommend(["3", "4"], k=5, timeout=30).item_ids == before
        finally:
            stop_process(process)
        with pytest.raises(Unavailable):  # nobody listens any more: retried, then reported
            client.recommend(["3", "4"], k=5, timeout=10)


def test_admission_refuses_at_once_a_request_that_cannot_meet_its_deadline(repository):
    # Batches wait 1.5 s to fill, which the gateway knows: a 0.3 s deadline cannot be met.
    with running_gateway(repository, "--max-wait-ms", 1500) as (target, metrics_url, _process):
        with grpc.insecure_channel(target) as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            request = pb.RecommendRequest(history=[pb.Event(item_id="1")], k=3)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Recommend(request, timeout=0.3)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "after the deadline" in refused.value.details()
            assert len(stub.Recommend(request, timeout=30).items) == 3  # a patient one is served
        after = scrape(metrics_url)
    assert after['logitrec_request_failures_total{reason="overloaded"}'] == 1


def test_a_gateway_started_again_in_the_same_folder_is_waited_for_not_its_predecessor(
    repository, tmp_path
):
    from logitrec.gateway_process import spawn_gateway as spawn
    from logitrec.gateway_process import wait_until_ready

    first = wait_until_ready(spawn(repository, tmp_path))
    stop_process(first.process)
    second = wait_until_ready(spawn(repository, tmp_path))  # the first one's ready file is stale
    try:
        with RecommenderClient(second.target, retry=NO_RETRIES) as client:
            assert len(client.recommend(["3", "4"], k=5)) == 5
    finally:
        stop_process(second.process)
