"""How the client SDK fails: one exception per status, retries, deadlines and TLS."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from certificates import Certificates, make_certificates
from logitrec_client import (
    NO_RETRIES,
    AsyncRecommenderClient,
    DeadlineExceeded,
    InvalidRequest,
    LogitRecError,
    NotFound,
    Overloaded,
    RecommenderClient,
    TlsConfig,
    Unavailable,
)
from logitrec_client.cli import main
from test_client_fakes import (
    Gateway,
    gateway_fixture,  # noqa: F401
    running_gateway,
)

CODES = [
    (grpc.StatusCode.INVALID_ARGUMENT, InvalidRequest),
    (grpc.StatusCode.NOT_FOUND, NotFound),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, Overloaded),
    (grpc.StatusCode.UNAVAILABLE, Unavailable),
    (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
    (grpc.StatusCode.INTERNAL, LogitRecError),
]


@pytest.mark.parametrize(("code", "error_class"), CODES, ids=[code.name for code, _ in CODES])
def test_each_status_raises_its_exception_with_the_servers_message(
    gateway: Gateway, code: grpc.StatusCode, error_class: type[LogitRecError]
) -> None:
    gateway.servicer.failures = [(code, f"server says {code.name}")]
    client = RecommenderClient(gateway.target, retry=NO_RETRIES)
    with client, pytest.raises(LogitRecError) as raised:
        client.recommend(["i1"])
    assert type(raised.value) is error_class
    assert raised.value.code is code
    assert raised.value.details == f"server says {code.name}"
    assert str(raised.value) == f"{code.name}: server says {code.name}"
    assert isinstance(raised.value.__cause__, grpc.RpcError)


@pytest.mark.asyncio
async def test_async_client_raises_the_same_exceptions(gateway: Gateway) -> None:
    gateway.servicer.failures = [(grpc.StatusCode.INVALID_ARGUMENT, "k must be >= 1")]
    async with AsyncRecommenderClient(gateway.target) as client:
        with pytest.raises(InvalidRequest, match="k must be >= 1"):
            await client.recommend(["i1"], k=0)
        with pytest.raises(NotFound, match="unknown model 'missing'"):
            await client.model_info("missing")


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_transient_failures_are_retried_until_success(
    gateway: Gateway, code: grpc.StatusCode
) -> None:
    gateway.servicer.failures = [(code, "try again"), (code, "try again")]
    with RecommenderClient(gateway.target) as client:
        result = client.recommend(["i1"], k=1)
    assert result.item_ids == ["i2"]
    assert gateway.servicer.attempts == 3


def test_invalid_requests_are_never_retried(gateway: Gateway) -> None:
    gateway.servicer.failures = [(grpc.StatusCode.INVALID_ARGUMENT, "bad k")] * 3
    with RecommenderClient(gateway.target) as client, pytest.raises(InvalidRequest):
        client.recommend(["i1"])
    assert gateway.servicer.attempts == 1


def test_retries_give_up_after_max_attempts(gateway: Gateway) -> None:
    gateway.servicer.failures = [(grpc.StatusCode.UNAVAILABLE, "backend down")] * 10
    with RecommenderClient(gateway.target) as client, pytest.raises(Unavailable, match="down"):
        client.recommend(["i1"])
    assert gateway.servicer.attempts == 4  # RetryPolicy's default max_attempts


def test_a_slow_gateway_raises_deadline_exceeded(gateway: Gateway) -> None:
    gateway.servicer.hold = True
    # The call's own timeout beats the client's; the client's applies when the call sets none.
    with RecommenderClient(gateway.target, timeout=30) as client, pytest.raises(DeadlineExceeded):
        client.recommend(["i1"], timeout=0.2)
    with RecommenderClient(gateway.target, timeout=0.2) as client, pytest.raises(DeadlineExceeded):
        client.model_info()


@pytest.mark.asyncio
async def test_async_deadline(gateway: Gateway) -> None:
    gateway.servicer.hold = True
    async with AsyncRecommenderClient(gateway.target) as client:
        with pytest.raises(DeadlineExceeded):
            await client.score(["i1"], ["i2"], timeout=0.2)


def test_an_answer_over_max_message_bytes_is_not_reported_as_overload(gateway: Gateway) -> None:
    client = RecommenderClient(gateway.target, max_message_bytes=300)
    with client, pytest.raises(LogitRecError, match="larger than max") as raised:
        client.recommend_batch([{"history": ["i1"]}] * 5)
    assert type(raised.value) is LogitRecError
    assert gateway.servicer.attempts == 1


def test_errors_survive_pickling() -> None:
    error = pickle.loads(pickle.dumps(Overloaded(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")))
    assert type(error) is Overloaded
    assert (error.code, error.details) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_gateway(certificates: Certificates) -> Iterator[Gateway]:
    credentials = grpc.ssl_server_credentials([(certificates.server_key, certificates.server_cert)])
    with running_gateway(credentials) as running:
        yield running


def test_tls_connects_with_the_right_root_certificates(
    tls_gateway: Gateway, certificates: Certificates, tmp_path: Path
) -> None:
    (tmp_path / "ca.pem").write_bytes(certificates.ca)
    tls = TlsConfig.from_files(root_certificates=tmp_path / "ca.pem")
    with RecommenderClient(tls_gateway.target, tls=tls, token="t") as client:
        assert client.recommend(["i1"], k=1).item_ids == ["i2"]
    assert tls_gateway.servicer.metadata[0]["authorization"] == "Bearer t"
    # The CLI takes the same trust from a file.
    argv = ["info", "--target", tls_gateway.target, "--root-certs", str(tmp_path / "ca.pem")]
    assert main(argv) == 0


def test_tls_without_trusting_the_ca_is_unavailable(tls_gateway: Gateway) -> None:
    # tls=True trusts only the system's CAs, which never signed the test server's certificate.
    for tls in (True, False):
        client = RecommenderClient(tls_gateway.target, tls=tls, retry=NO_RETRIES)
        with client, pytest.raises(Unavailable):
            client.recommend(["i1"])
    assert tls_gateway.servicer.attempts == 0


def test_mutual_tls_needs_the_client_certificate(certificates: Certificates) -> None:
    credentials = grpc.ssl_server_credentials(
        [(certificates.server_key, certificates.server_cert)],
        root_certificates=certificates.ca,
        require_client_auth=True,
    )
    with running_gateway(credentials) as mtls_gateway:
        with_cert = TlsConfig(
            root_certificates=certificates.ca,
            certificate_chain=certificates.client_cert,
            private_key=certificates.client_key,
        )
        with RecommenderClient(mtls_gateway.target, tls=with_cert) as client:
            assert client.model_info().model == "tiny"
        without_cert = TlsConfig(root_certificates=certificates.ca)
        client = RecommenderClient(mtls_gateway.target, tls=without_cert, retry=NO_RETRIES)
        with client, pytest.raises(Unavailable):
            client.model_info()
    assert "private_key" not in repr(with_cert)
