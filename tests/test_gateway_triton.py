"""The gateway's triton backend against the real Triton server: same answers as embedded, and a
clear refusal at start-up when Triton cannot serve what the gateway would send."""

import grpc
import pytest
from conftest import run_cli, running_gateway
from logitrec_client.proto import recommender_pb2 as pb
from logitrec_client.proto import recommender_pb2_grpc

from logitrec.repository import TRITON_MAX_BATCH_SIZE
from logitrec.triton_local import load_model, run_triton, triton_venv

if not (triton_venv() / "bin" / "python").exists():
    pytest.skip(
        f"no Triton environment at {triton_venv()} (run `make install`)", allow_module_level=True
    )


def recommend(target, history, **fields):
    with grpc.insecure_channel(target) as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        request = pb.RecommendRequest(history=[pb.Event(item_id=str(i)) for i in history], **fields)
        return stub.Recommend(request, timeout=30)


def serve_on_triton(repository, triton, *args):
    """`logitrec serve --backend triton` run to completion (for start-up refusals)."""
    return run_cli(
        "serve", "--repository", repository, "--backend", "triton",
        "--triton-url", triton.grpc_url, "--port", "0", "--metrics-port", "0", *args, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def triton(tiny_repository):
    with run_triton(tiny_repository) as server:
        for model in ("tiny_encoder", "tiny_scorer"):
            load_model(server, model)
        yield server


def test_triton_backend_answers_like_the_embedded_one(tiny_repository, triton):
    histories = [[1, 2, 3], [40], [9, 8, 7, 6, 5]]
    with running_gateway(tiny_repository) as (target, _, _process):
        expected = [recommend(target, h, k=5) for h in histories]
    with running_gateway(
        tiny_repository, "--backend", "triton", "--triton-url", triton.grpc_url
    ) as (target, _, _process):
        for history, reference in zip(histories, expected, strict=True):
            got = recommend(target, history, k=5)
            assert [i.item_id for i in got.items] == [i.item_id for i in reference.items]
            assert [i.logit for i in got.items] == pytest.approx(
                [i.logit for i in reference.items], abs=1e-4
            )
        with grpc.insecure_channel(target) as channel:
            info = recommender_pb2_grpc.RecommenderServiceStub(channel).GetModelInfo(
                pb.GetModelInfoRequest()
            )
        assert info.backend == "triton"


def test_gateway_refuses_batches_larger_than_triton_accepts(tiny_repository, triton):
    too_large = TRITON_MAX_BATCH_SIZE * 2
    result = serve_on_triton(tiny_repository, triton, "--max-batch-size", too_large)
    assert result.returncode == 2
    assert f"--max-batch-size {too_large}" in result.stderr
    assert f"max_batch_size {TRITON_MAX_BATCH_SIZE}" in result.stderr


def test_gateway_refuses_to_start_when_triton_lacks_the_model(tiny_repository, tmp_path):
    # The gateway has Triton load what it serves; this Triton's repository does not have it.
    with run_triton(tmp_path) as bare:
        result = serve_on_triton(tiny_repository, bare)
    assert result.returncode == 2 and "could not load tiny_encoder" in result.stderr
