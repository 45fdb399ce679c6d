"""The gateway under backend faults: a real Triton killed, restarted without its models, or
stopped (SIGSTOP) under a real `logitrec serve --backend triton`; requests fail fast with the
right code, health follows the backend, and serving resumes without a gateway restart. Plus
unit tests of the error mapping and of the backend-call timeout."""

import asyncio
import contextlib
import signal
import time

import grpc
import numpy as np
import pytest
from conftest import running_gateway
from grpc_health.v1 import health_pb2, health_pb2_grpc
from logitrec_client.proto import recommender_pb2 as pb
from logitrec_client.proto import recommender_pb2_grpc
from tritonclient.utils import InferenceServerException

from logitrec.triton_local import load_model, run_triton, triton_venv
from serving.backends.base import call_with_timeout
from serving.backends.embedded import EmbeddedBackend
from serving.backends.triton import MESSAGE_CHARS, backend_error
from serving.errors import BackendTimeout, DeadlineExpired, status_of
from serving.registry import load_version

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
HISTORY = ["1", "2", "3"]
needs_triton = pytest.mark.skipif(
    not (triton_venv() / "bin" / "python").exists(),
    reason=f"no Triton environment at {triton_venv()} (run `make install`)",
)


def recommend(target: str, timeout: float = 20.0) -> list[str]:
    """The item ids a Recommend call answers (a generous deadline: a hang would show)."""
    with grpc.insecure_channel(target) as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        request = pb.RecommendRequest(history=[pb.Event(item_id=i) for i in HISTORY], k=5)
        return [item.item_id for item in stub.Recommend(request, timeout=timeout).items]


def refusal(target: str, timeout: float) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        recommend(target, timeout)
    return refused.value


def wait_for_health(target: str, wanted, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            with contextlib.suppress(grpc.RpcError):
                answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if answer.status == wanted:
                    return
            assert time.monotonic() < deadline, f"health never turned {wanted} in {within} s"
            time.sleep(0.1)


@contextlib.contextmanager
def triton_with_models(repository):
    with run_triton(repository) as triton:
        for model in ("tiny_encoder", "tiny_scorer"):
            load_model(triton, model)
        yield triton


def gateway_on(repository, triton, *args):
    return running_gateway(
        repository, "--backend", "triton", "--triton-url", triton.grpc_url,
        "--backend-probe-seconds", 0.2, "--drain-seconds", 0, *args,
    )  # fmt: skip


@needs_triton
def test_triton_killed_then_restarted_without_models(tiny_repository):
    with (
        triton_with_models(tiny_repository) as triton,
        gateway_on(tiny_repository, triton) as (target, _, _process),
    ):
        before = recommend(target)
        triton.process.kill()
        triton.process.wait()
        # At once, whether or not the probe has noticed yet: UNAVAILABLE, not a hang.
        assert refusal(target, timeout=20).code() == grpc.StatusCode.UNAVAILABLE
        wait_for_health(target, NOT_SERVING)
        refused = refusal(target, timeout=20)
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert "backend unavailable" in refused.details()
        # Back at the same address with nothing loaded: the probe loads the models again.
        with run_triton(tiny_repository, ports=triton.ports):
            wait_for_health(target, SERVING)
            assert recommend(target) == before


@needs_triton
def test_triton_stopped_then_continued(tiny_repository):
    with triton_with_models(tiny_repository) as triton:
        gateway = gateway_on(tiny_repository, triton, "--backend-timeout-seconds", 1)
        with gateway as (target, _, _process):
            before = recommend(target)
            triton.process.send_signal(signal.SIGSTOP)
            try:
                # The Triton call times out after 1 s instead of waiting the 20 s out.
                assert refusal(target, timeout=20).code() == grpc.StatusCode.UNAVAILABLE
                short = refusal(target, timeout=2).code()
                assert short in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
                wait_for_health(target, NOT_SERVING)
            finally:
                triton.process.send_signal(signal.SIGCONT)
            wait_for_health(target, SERVING)
            assert recommend(target) == before


# -- unit tests: Triton's status -> the gateway's error and the caller's gRPC code -------------
@pytest.mark.parametrize(
    ("triton_status", "caller_sees"),
    [
        ("StatusCode.UNAVAILABLE", grpc.StatusCode.UNAVAILABLE),  # unreachable, overloaded
        ("StatusCode.NOT_FOUND", grpc.StatusCode.UNAVAILABLE),  # model gone (Triton restarted)
        ("StatusCode.DEADLINE_EXCEEDED", grpc.StatusCode.UNAVAILABLE),  # engine judges: below
        ("StatusCode.INVALID_ARGUMENT", grpc.StatusCode.INTERNAL),  # tensors the gateway built
        ("StatusCode.INTERNAL", grpc.StatusCode.INTERNAL),
        ("StatusCode.RESOURCE_EXHAUSTED", grpc.StatusCode.INTERNAL),
        (None, grpc.StatusCode.INTERNAL),  # tritonclient's own checks (dtype, shapes)
    ],
)
def test_triton_errors_map_to_the_right_status(triton_status, caller_sees):
    error = backend_error(InferenceServerException("x" * 5000, status=triton_status), "encoder")
    code, message, _reason = status_of(error)
    assert code == caller_sees
    assert message.startswith("Triton encoder failed") and len(message) < MESSAGE_CHARS + 100


def test_a_model_not_at_ready_state_is_unavailable():
    error = InferenceServerException(
        "Request for unknown model: 'tiny_encoder' version 1 is not at ready state",
        status="StatusCode.FAILED_PRECONDITION",
    )
    assert status_of(backend_error(error, "scorer"))[0] == grpc.StatusCode.UNAVAILABLE


def test_timeouts_become_deadline_exceeded_only_when_the_deadline_set_them():
    async def stuck(timeout):
        raise BackendTimeout(f"no answer within {timeout} s")

    async def check():
        soon = time.monotonic() + 0.5
        with pytest.raises(DeadlineExpired):
            await call_with_timeout(stuck, soon, longest=10.0)
        with pytest.raises(BackendTimeout) as capped:
            await call_with_timeout(stuck, time.monotonic() + 60, longest=1.0)
        assert status_of(capped.value)[0] == grpc.StatusCode.UNAVAILABLE
        assert "--backend-timeout-seconds" in str(capped.value)
        with pytest.raises(BackendTimeout):
            await call_with_timeout(stuck, None, longest=1.0)
        called = []
        with pytest.raises(DeadlineExpired):
            await call_with_timeout(called.append, time.monotonic() - 1, longest=1.0)
        assert not called  # a passed deadline never reaches the backend
        timeouts = []

        async def answers(timeout):
            timeouts.append(timeout)
            return "answer"

        assert await call_with_timeout(answers, time.monotonic() + 0.5, longest=10.0) == "answer"
        assert await call_with_timeout(answers, None, longest=3.0) == "answer"
        assert 0 < timeouts[0] <= 0.5 and timeouts[1] == 3.0

    asyncio.run(check())


def test_embedded_backend_stops_waiting_at_its_timeout(tiny_repository):
    async def check():
        backend = EmbeddedBackend(threads=1)
        model = load_version(tiny_repository, "tiny", 1)
        await backend.load(model)
        items = np.ones((1, model.max_length), np.int64)
        context = np.zeros((1, len(model.context_features)), np.int64)
        try:
            with pytest.raises(BackendTimeout):
                await backend.encode(model, items, context, timeout=0)
            vectors = await backend.encode(model, items, context, timeout=30)
            assert vectors.shape == (1, model.hidden_size)
            assert await backend.healthy()
        finally:
            await backend.close()

    asyncio.run(check())
