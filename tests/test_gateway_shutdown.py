"""The real gateway's life cycle, in-process: unavailable while it loads, and on shutdown health
turns off first, then queued requests finish."""

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from logitrec_client.proto import recommender_pb2 as pb
from logitrec_client.proto import recommender_pb2_grpc

from serving.config import ServeConfig
from serving.engine import Engine
from serving.server import Gateway


@pytest.fixture(scope="module")
def repository(tiny_repository):
    return tiny_repository


@pytest.mark.asyncio
async def test_stop_turns_health_off_then_finishes_queued_requests(repository):
    # A long batch wait keeps the requests waiting in the batcher until shutdown begins.
    config = ServeConfig(repository=repository, port=0, metrics_port=None, max_wait_ms=2000)
    gateway = Gateway(config)
    await gateway.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}")
    try:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        request = pb.RecommendRequest(history=[pb.Event(item_id="3")], k=5)
        batcher = next(iter(gateway.engine._batchers.values()))
        already = batcher.received
        calls = [asyncio.ensure_future(stub.Recommend(request, timeout=30)) for _ in range(8)]
        deadline = time.monotonic() + 10
        while batcher.received < already + 8:
            assert time.monotonic() < deadline, "the requests never reached the batcher"
            await asyncio.sleep(0.01)
        assert not any(call.done() for call in calls)  # all eight wait for their batch
        stopping = asyncio.ensure_future(gateway.stop())
        await asyncio.sleep(0)
        status = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
        responses = await asyncio.gather(*calls)
        assert all(len(r.items) == 5 for r in responses)
        await stopping
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Recommend(request, timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await gateway.stop()
        await channel.close()


@pytest.mark.asyncio
async def test_requests_are_unavailable_until_every_model_is_loaded(repository, monkeypatch):
    release = asyncio.Event()
    load_all = Engine.load_all

    async def held_load_all(engine):  # loading takes as long as the test says
        await release.wait()
        await load_all(engine)

    monkeypatch.setattr(Engine, "load_all", held_load_all)
    gateway = Gateway(ServeConfig(repository=repository, port=0, metrics_port=None))
    starting = asyncio.ensure_future(gateway.start())
    channel = None
    try:
        deadline = time.monotonic() + 30
        while gateway.port is None:  # bound before the models load
            assert time.monotonic() < deadline and not starting.done(), "never bound its port"
            await asyncio.sleep(0.01)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}")
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        request = pb.RecommendRequest(history=[pb.Event(item_id="3")], k=5)
        status = await health.Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10, wait_for_ready=True
        )
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Recommend(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "loading" in refused.value.details()
        release.set()
        await starting
        status = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        assert len((await stub.Recommend(request, timeout=10)).items) == 5
    finally:
        release.set()
        await asyncio.gather(starting, return_exceptions=True)
        await gateway.stop()
        if channel is not None:
            await channel.close()
