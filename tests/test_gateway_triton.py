"""The gateway's triton backend against the real Triton server: same answers as embedded, and a
clear refusal at start-up when Triton cannot serve what the gateway would send."""

import grpc
import pytest
from certificates import make_certificates
from conftest import run_cli, running_gateway
from logitrec_client.proto import recommender_pb2 as pb
from logitrec_client.proto import recommender_pb2_grpc

from logitrec.repository import TRITON_MAX_BATCH_SIZE
from logitrec.triton_local import TritonTls, load_model, run_triton, triton_venv

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


# Plain, explained, re-ranked and filtered requests: every feature works on both backends.
REQUESTS = [
    ([1, 2, 3], {"k": 5}),
    ([40], {"k": 5}),
    ([9, 8, 7, 6, 5], {"k": 5}),
    ([9, 8, 7, 6, 5], {"k": 3, "explain": True}),
    ([1, 2, 3], {"k": 5, "rerank": pb.Rerank(mmr_lambda=0.5, popularity_beta=1.0)}),
    ([1, 2, 3], {"k": 4, "filters": [pb.MetadataFilter(field="genres", any_of=["Western"])]}),
]


def test_triton_backend_answers_like_the_embedded_one(tiny_repository, triton):
    with running_gateway(tiny_repository) as (target, _, _process):
        expected = [recommend(target, history, **fields) for history, fields in REQUESTS]
    with running_gateway(
        tiny_repository, "--backend", "triton", "--triton-url", triton.grpc_url
    ) as (target, _, _process):
        for (history, fields), reference in zip(REQUESTS, expected, strict=True):
            got = recommend(target, history, **fields)
            assert [i.item_id for i in got.items] == [i.item_id for i in reference.items]
            assert [i.logit for i in got.items] == pytest.approx(
                [i.logit for i in reference.items], abs=1e-4
            )
            for mine, theirs in zip(got.items, reference.items, strict=True):
                assert [c.item_id for c in mine.contributions] == [
                    c.item_id for c in theirs.contributions
                ]
                assert [c.logit_delta for c in mine.contributions] == pytest.approx(
                    [c.logit_delta for c in theirs.contributions], abs=1e-3
                )
            assert len(got.items[0].contributions) == (3 if fields.get("explain") else 0)
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


# -- TLS between the gateway and Triton: one Triton requiring client certificates (mutual TLS)
# serves every case; the gateway must reach it only with the right CA and client certificate.


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("triton-certs"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    """A CA that did not sign Triton's certificate."""
    return make_certificates(tmp_path_factory.mktemp("other-certs")).path("ca.pem")


@pytest.fixture(scope="module")
def mutual_tls_triton(tiny_repository, certificates):
    tls = TritonTls(
        server_cert=certificates.path("server.pem"),
        server_key=certificates.path("server.key"),
        ca=certificates.path("ca.pem"),
        client_ca=certificates.path("ca.pem"),
        client_cert=certificates.path("client.pem"),
        client_key=certificates.path("client.key"),
    )
    with run_triton(tiny_repository, tls=tls) as server:
        yield server


def triton_tls_flags(certificates, *, root_certs=None, client_certificate=True):
    flags = ["--triton-tls", "--triton-root-certs", root_certs or certificates.path("ca.pem")]
    if client_certificate:
        flags += ["--triton-client-cert", certificates.path("client.pem")]
        flags += ["--triton-client-key", certificates.path("client.key")]
    return flags


def test_gateway_reaches_triton_over_mutual_tls(tiny_repository, mutual_tls_triton, certificates):
    histories = [[1, 2, 3], [9, 8, 7, 6, 5]]
    with running_gateway(tiny_repository) as (target, _, _process):
        expected = [recommend(target, h, k=5) for h in histories]
    tls = triton_tls_flags(certificates)
    with running_gateway(
        tiny_repository, "--backend", "triton", "--triton-url", mutual_tls_triton.grpc_url, *tls
    ) as (target, _, _process):
        for history, reference in zip(histories, expected, strict=True):
            got = recommend(target, history, k=5)
            assert [i.item_id for i in got.items] == [i.item_id for i in reference.items]


@pytest.mark.parametrize(
    ("case", "should_name"),
    [
        ("plaintext", "--triton-tls"),
        ("untrusted CA", "--triton-root-certs"),
        ("no client certificate", "--triton-client-cert"),
    ],
)
def test_gateway_refuses_to_start_when_tls_to_triton_fails(
    tiny_repository, mutual_tls_triton, certificates, other_ca, case, should_name
):
    flags = {
        "plaintext": [],
        "untrusted CA": triton_tls_flags(certificates, root_certs=other_ca),
        "no client certificate": triton_tls_flags(certificates, client_certificate=False),
    }[case]
    result = serve_on_triton(
        tiny_repository, mutual_tls_triton, "--backend-timeout-seconds", 5, *flags
    )
    assert result.returncode == 2
    assert f"the gateway could not start: Triton at {mutual_tls_triton.grpc_url}" in result.stderr
    assert should_name in result.stderr
