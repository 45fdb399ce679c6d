"""The gateway's triton backend against the real Triton server: same answers as embedded."""

import grpc
import pytest
from conftest import run_cli, running_gateway
from logitrec_client._proto.logitrec.v1 import recommender_pb2 as pb
from logitrec_client._proto.logitrec.v1 import recommender_pb2_grpc

from logitrec.triton_local import load_model, run_triton, triton_venv

if not (triton_venv() / "bin" / "python").exists():
    pytest.skip(
        f"no Triton environment at {triton_venv()} (run `make install`)", allow_module_level=True
    )


def export_for_triton(checkpoint, repository):
    run_cli(
        "export", "--checkpoint", checkpoint, "--repository", repository,
        "--name", "tiny", "--triton-backend", "python",
    )  # fmt: skip
    return repository


def recommend(target, history, **fields):
    with grpc.insecure_channel(target) as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        request = pb.RecommendRequest(history=[pb.Event(item_id=str(i)) for i in history], **fields)
        return stub.Recommend(request, timeout=30)


def test_triton_backend_answers_like_the_embedded_one(tiny_checkpoints, tmp_path):
    repository = export_for_triton(tiny_checkpoints[0], tmp_path / "models")
    histories = [[1, 2, 3], [40], [9, 8, 7, 6, 5]]
    with running_gateway(repository) as (target, _, _process):
        expected = [recommend(target, h, k=5) for h in histories]
    with run_triton(repository) as triton:
        for model in ("tiny_encoder", "tiny_scorer"):
            load_model(triton, model)
        with running_gateway(
            repository, "--backend", "triton", "--triton-url", triton.grpc_url
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


def test_gateway_refuses_to_start_when_triton_lacks_the_model(tiny_checkpoints, tmp_path):
    repository = export_for_triton(tiny_checkpoints[0], tmp_path / "models")
    with run_triton(repository) as triton:  # started, but nothing loaded
        result = run_cli(
            "serve", "--repository", repository, "--backend", "triton",
            "--triton-url", triton.grpc_url, "--port", "0", "--metrics-port", "0", check=False,
        )  # fmt: skip
    assert result.returncode == 2 and "tiny_encoder" in result.stderr
