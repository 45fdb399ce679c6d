"""Security of the real gateway (`logitrec serve` subprocesses): TLS and mutual TLS, bearer tokens
with roles, what is exposed by default, credential rotation while serving, hostile input."""

import hmac
import json
import os
import secrets
import signal
import time
from pathlib import Path

import grpc
import pytest
from certificates import Certificates, make_certificates
from conftest import run_cli
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from logitrec_client import RecommenderClient, TlsConfig, Unauthenticated, Unavailable
from logitrec_client.proto import admin_pb2, admin_pb2_grpc, recommender_pb2, recommender_pb2_grpc

from logitrec.gateway_process import running_gateway
from serving import auth

RETRIES_OFF = (("grpc.enable_retries", 0),)


# -- credentials ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory) -> Certificates:
    """A second, unrelated CA with its own client certificate."""
    return make_certificates(tmp_path_factory.mktemp("other-pki"))


def new_token() -> str:
    return secrets.token_urlsafe(24)


def write_tokens(path: Path, entries: list[tuple[str, str, str]]) -> Path:
    """[(name, role, token)]: the first as a plain token, the others by their SHA-256."""
    blocks = []
    for number, (name, role, token) in enumerate(entries):
        secret = (
            f'token = "{token}"' if number == 0 else f'sha256 = "{auth.token_digest(token).hex()}"'
        )
        blocks.append(f'[[token]]\nname = "{name}"\nrole = "{role}"\n{secret}\n')
    path.write_text("\n".join(blocks))
    return path


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> dict[str, str]:
    values = {"recommend": new_token(), "admin": new_token()}
    folder = tmp_path_factory.mktemp("tokens")
    write_tokens(
        folder / "tokens.toml",
        [("web", "recommend", values["recommend"]), ("ops", "admin", values["admin"])],
    )
    return values | {"file": str(folder / "tokens.toml")}


@pytest.fixture(scope="module")
def secure_gateway(tiny_repository, pki, tokens):
    """TLS (no client certificates) and tokens: the common production setup."""
    with running_gateway(
        tiny_repository,
        "--tls-cert", pki.path("server.pem"), "--tls-key", pki.path("server.key"),
        "--tokens-file", tokens["file"],
    ) as gateway:  # fmt: skip
        yield gateway


def tls_channel(target: str, pki: Certificates, client: Certificates | None = None):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca,
        private_key=client.client_key if client else None,
        certificate_chain=client.client_cert if client else None,
    )
    return grpc.secure_channel(target, credentials, options=RETRIES_OFF)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def some_item(tiny_repository: Path) -> str:
    import polars as pl

    catalog = next(tiny_repository.glob("tiny_scorer/*/catalog.parquet"))
    return str(pl.read_parquet(catalog)["item_id"][0])


def recommend_request(tiny_repository: Path, **fields) -> recommender_pb2.RecommendRequest:
    history = [recommender_pb2.Event(item_id=some_item(tiny_repository))]
    return recommender_pb2.RecommendRequest(history=history, k=3, **fields)


def status_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


# -- TLS -----------------------------------------------------------------------------------------
def test_tls_client_is_answered_and_plaintext_client_is_not(secure_gateway, pki, tokens):
    target = secure_gateway.target
    tls = TlsConfig.from_files(root_certificates=pki.path("ca.pem"))
    with RecommenderClient(target, tls=tls, token=tokens["recommend"]) as client:
        assert client.model_info().model == "tiny"
    with RecommenderClient(target, tls=tls) as anonymous, pytest.raises(Unauthenticated):
        anonymous.model_info()
    plaintext = RecommenderClient(target, token=tokens["recommend"], timeout=5)
    with plaintext, pytest.raises(Unavailable):  # the TLS port never speaks plaintext HTTP/2
        plaintext.model_info()
    untrusting = RecommenderClient(target, tls=True, token=tokens["recommend"], timeout=5)
    with untrusting, pytest.raises(Unavailable):  # the system's CAs never signed the test server
        untrusting.model_info()


def test_mutual_tls_rejects_clients_without_a_certificate_of_its_ca(
    tiny_repository, pki, other_pki
):
    with running_gateway(
        tiny_repository,
        "--tls-cert", pki.path("server.pem"), "--tls-key", pki.path("server.key"),
        "--tls-client-ca", pki.path("ca.pem"),
    ) as gateway:  # fmt: skip
        target = gateway.target
        request = recommend_request(tiny_repository)

        def recommend(client_pki):
            with tls_channel(target, pki, client_pki) as channel:
                stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
                return status_of(lambda: stub.Recommend(request, timeout=5))

        assert recommend(pki) is grpc.StatusCode.OK
        assert recommend(None) is grpc.StatusCode.UNAVAILABLE  # no client certificate
        assert recommend(other_pki) is grpc.StatusCode.UNAVAILABLE  # signed by another CA


# -- tokens and roles --------------------------------------------------------------------------
def test_tokens_and_roles_decide_who_may_call_what(secure_gateway, pki, tokens, tiny_repository):
    target = secure_gateway.target
    request = recommend_request(tiny_repository)
    with tls_channel(target, pki) as channel:
        recommender = recommender_pb2_grpc.RecommenderServiceStub(channel)
        admin = admin_pb2_grpc.ModelAdminServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        def recommend(metadata=()):
            return status_of(lambda: recommender.Recommend(request, metadata=metadata, timeout=5))

        def list_models(metadata=()):
            return status_of(
                lambda: admin.ListModels(
                    admin_pb2.ListModelsRequest(), metadata=metadata, timeout=5
                )
            )

        assert recommend() is grpc.StatusCode.UNAUTHENTICATED
        assert recommend(bearer("x" * 43)) is grpc.StatusCode.UNAUTHENTICATED
        assert recommend((("authorization", tokens["recommend"]),)) is (
            grpc.StatusCode.UNAUTHENTICATED  # no "Bearer " scheme
        )
        assert recommend(bearer(tokens["recommend"])) is grpc.StatusCode.OK
        assert list_models() is grpc.StatusCode.UNAUTHENTICATED
        assert list_models(bearer(tokens["recommend"])) is grpc.StatusCode.PERMISSION_DENIED
        assert list_models(bearer(tokens["admin"])) is grpc.StatusCode.OK
        assert recommend(bearer(tokens["admin"])) is grpc.StatusCode.OK
        # Health stays open: load balancers and kubelets probe without credentials.
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        # An unknown method tells an unauthenticated caller nothing.
        unknown = channel.unary_unary("/logitrec.v1.RecommenderService/Nope")
        assert status_of(lambda: unknown(b"", timeout=5)) is grpc.StatusCode.UNAUTHENTICATED
        assert status_of(lambda: unknown(b"", metadata=bearer(tokens["recommend"]), timeout=5)) is (
            grpc.StatusCode.UNIMPLEMENTED
        )
    log = secure_gateway.log_path
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert not any(
        tokens["recommend"] in str(line) or tokens["admin"] in str(line) for line in lines
    )
    assert any(line.get("caller") == "ops" and "ListModels" in line["message"] for line in lines)
    denied = [line for line in lines if line.get("status") == "PERMISSION_DENIED"]
    assert denied and "admin" in denied[0]["message"]


def test_the_client_cli_speaks_tls_with_a_token_file(secure_gateway, pki, tokens, tmp_path):
    import subprocess
    import sys

    target = secure_gateway.target
    token_file = tmp_path / "token"
    token_file.write_text(tokens["recommend"] + "\n")
    base = [sys.executable, "-m", "logitrec_client", "info", "--target", target]
    base += ["--root-certs", str(pki.path("ca.pem")), "--json"]

    def client(*extra, env=None):
        environment = {k: v for k, v in os.environ.items() if k != "LOGITREC_TOKEN"} | (env or {})
        return subprocess.run([*base, *extra], capture_output=True, text=True, env=environment)

    assert json.loads(client("--token-file", str(token_file)).stdout)["model"] == "tiny"
    assert client(env={"LOGITREC_TOKEN": tokens["recommend"]}).returncode == 0
    refused = client()
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr


def test_the_token_check_compares_in_constant_time(monkeypatch):
    tokens = [new_token() for _ in range(3)]
    table = auth.load_tokens(None, environ={"LOGITREC_RECOMMEND_TOKENS": ",".join(tokens)})
    compared = []

    def spy(a, b):
        compared.append((len(a), len(b)))
        return auth_compare(a, b)

    auth_compare = auth.compare_digest
    monkeypatch.setattr(auth, "compare_digest", spy)
    assert table.authenticate(tokens[0]).name == "logitrec_recommend_tokens#1"
    # hmac.compare_digest on fixed-length digests, for every credential, even after a match:
    # neither matching characters nor the position of the match change the work done.
    assert compared == [(32, 32)] * 3
    assert auth_compare is hmac.compare_digest
    compared.clear()
    assert table.authenticate(tokens[2][:-1] + "?") is None
    assert compared == [(32, 32)] * 3


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[[token]]\nname = "a"\nrole = "recommend"\ntoken = "short"\n', "at least 16"),
        ('[[token]]\nname = "a"\nrole = "root"\ntoken = "' + "t" * 20 + '"\n', "'role' must"),
        ('[[token]]\nname = "a"\nrole = "admin"\n', "exactly one of 'token' and 'sha256'"),
        ('[[token]]\nname = "a"\nrole = "admin"\nsha256 = "beef"\n', "64 hex digits"),
        ('[[token]]\nname = "a"\nrole = "admin"\nexpires = 1\ntoken = "' + "t" * 20 + '"\n',
         "unknown key(s) expires"),
        ("", "no [[token]] entries"),
        ("[[token]\n", "not valid TOML"),
    ],
)  # fmt: skip
def test_a_bad_tokens_file_is_refused_naming_the_problem(tmp_path, text, problem):
    from logitrec.errors import InputError

    (tmp_path / "tokens.toml").write_text(text)
    with pytest.raises(InputError, match=r"tokens\.toml") as error:
        auth.load_tokens(tmp_path / "tokens.toml", environ={})
    assert problem in str(error.value)


# -- exposure ----------------------------------------------------------------------------------
def reflection_status(target: str, pki: Certificates, metadata=()) -> grpc.StatusCode:
    with tls_channel(target, pki) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        return status_of(lambda: list(stub.ServerReflectionInfo(iter([request]), metadata=metadata,
                                                               timeout=5)))  # fmt: skip


def test_reflection_and_metrics_are_off_by_default_when_callers_authenticate(
    secure_gateway, pki, tokens, tiny_repository
):
    target = secure_gateway.target
    assert secure_gateway.metrics_url is None  # no /metrics port was opened
    assert reflection_status(target, pki) is grpc.StatusCode.UNAUTHENTICATED
    assert reflection_status(target, pki, bearer(tokens["recommend"])) is (
        grpc.StatusCode.UNIMPLEMENTED
    )
    # Asked for, they are on; reflection still needs a token.
    with running_gateway(
        tiny_repository,
        "--tls-cert", pki.path("server.pem"), "--tls-key", pki.path("server.key"),
        "--tokens-file", tokens["file"], "--reflection", "--metrics",
    ) as gateway:  # fmt: skip
        target = gateway.target
        assert gateway.metrics_url is not None
        assert reflection_status(target, pki) is grpc.StatusCode.UNAUTHENTICATED
        assert reflection_status(target, pki, bearer(tokens["recommend"])) is grpc.StatusCode.OK


def test_plaintext_on_a_network_address_needs_insecure(tiny_repository):
    refused = run_cli("serve", "--repository", tiny_repository, "--host", "0.0.0.0", check=False)
    assert refused.returncode == 2
    assert "--insecure" in refused.stderr and "TLS" in refused.stderr
    with running_gateway(tiny_repository, "--host", "0.0.0.0", "--insecure") as gateway:
        target = gateway.target
        assert "PLAINTEXT" in gateway.log_path.read_text()
        # Without tokens on a network address, the admin service is not served.
        with grpc.insecure_channel(target) as channel:
            admin = admin_pb2_grpc.ModelAdminServiceStub(channel)
            call = lambda: admin.ListModels(admin_pb2.ListModelsRequest(), timeout=5)  # noqa: E731
            assert status_of(call) is grpc.StatusCode.UNIMPLEMENTED


# -- hostile input ---------------------------------------------------------------------------------
def test_a_100kb_model_name_gets_a_short_error_and_a_short_log_line(
    secure_gateway, pki, tokens, tiny_repository
):
    target = secure_gateway.target
    request = recommend_request(tiny_repository, model="m" * 100_000)
    with tls_channel(target, pki) as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Recommend(request, metadata=bearer(tokens["recommend"]), timeout=5)
        assert error.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
        assert 0 < len(error.value.details().encode()) < 1024
        admin = admin_pb2_grpc.ModelAdminServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            admin.LoadModel(
                admin_pb2.LoadModelRequest(model="m" * 100_000),
                metadata=bearer(tokens["admin"]),
                timeout=5,
            )
        assert len(error.value.details().encode()) < 1024
    time.sleep(0.2)  # the access line is written after the answer
    log = secure_gateway.log_path.read_text()
    assert max(len(line) for line in log.splitlines()) < 2048


# -- rotation while serving ----------------------------------------------------------------------
def test_tokens_and_certificates_rotate_without_a_restart(
    tiny_repository, pki, other_pki, tmp_path
):
    old, new = new_token(), new_token()
    tokens_file = write_tokens(tmp_path / "tokens.toml", [("web-old", "recommend", old)])
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(pki.server_cert)
    key.write_bytes(pki.server_key)
    request = recommend_request(tiny_repository)
    with running_gateway(
        tiny_repository, "--tls-cert", cert, "--tls-key", key, "--tokens-file", tokens_file,
        "--credentials-poll-seconds", "0.2",
    ) as gateway:  # fmt: skip
        target, process = gateway.target, gateway.process

        def recommend(token: str, trust: Certificates) -> grpc.StatusCode:
            with tls_channel(target, trust) as channel:  # a new connection: a new handshake
                stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
                return status_of(lambda: stub.Recommend(request, metadata=bearer(token), timeout=5))

        def eventually(check, seconds: float = 10.0) -> bool:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if check():
                    return True
                time.sleep(0.1)
            return False

        assert recommend(old, pki) is grpc.StatusCode.OK
        # Tokens: the new one is added, then the old one removed; a broken file in between
        # changes nothing (the previous tokens stay).
        tokens_file.write_text("[[token]\n")
        time.sleep(1.0)
        assert recommend(old, pki) is grpc.StatusCode.OK
        write_tokens(tokens_file, [("web-old", "recommend", old), ("web-new", "recommend", new)])
        assert eventually(lambda: recommend(new, pki) is grpc.StatusCode.OK)
        write_tokens(tokens_file, [("web-new", "recommend", new)])
        os.kill(process.pid, signal.SIGHUP)  # SIGHUP re-reads at once
        assert eventually(lambda: recommend(old, pki) is grpc.StatusCode.UNAUTHENTICATED)
        assert recommend(new, pki) is grpc.StatusCode.OK
        # Certificates: a new server certificate from another CA, written in place.
        cert.write_bytes(other_pki.server_cert)
        key.write_bytes(other_pki.server_key)
        assert eventually(lambda: recommend(new, other_pki) is grpc.StatusCode.OK)
        assert recommend(new, pki) is grpc.StatusCode.UNAVAILABLE  # the old CA is no longer it


def test_a_gateway_with_unusable_credentials_does_not_start(tiny_repository, pki, tmp_path):
    (tmp_path / "tokens.toml").write_text("")
    cases = [
        (["--tls-cert", pki.path("server.pem")], "--tls-key"),
        (
            ["--tls-cert", pki.path("server.pem"), "--tls-key", pki.path("client.key")],
            "private key",
        ),
        (["--tokens-file", tmp_path / "tokens.toml"], "no [[token]] entries"),
        (["--tokens-file", tmp_path / "missing.toml"], "file not found"),
    ]
    for args, problem in cases:
        result = run_cli("serve", "--repository", tiny_repository, "--port", "0", *args,
                         check=False)  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert problem in result.stderr
        assert "Traceback" not in result.stderr


def test_token_new_appends_an_entry_the_gateway_accepts(tiny_repository, pki, tmp_path):
    tokens_file = tmp_path / "tokens.toml"
    made = run_cli("token", "new", "--role", "admin", "--name", "ops", "--append", tokens_file)
    token = made.stdout.strip()
    assert token not in tokens_file.read_text()  # only its hash is stored
    again = run_cli("token", "new", "--role", "admin", "--name", "ops", "--append", tokens_file,
                    check=False)  # fmt: skip
    assert again.returncode == 2 and "used twice" in again.stderr
    table = auth.load_tokens(tokens_file, environ={})
    assert table.authenticate(token).role == "admin"
