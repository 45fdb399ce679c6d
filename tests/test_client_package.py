"""The client SDK as a distribution: only grpcio and protobuf, floors the stubs accept, a CLI."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from logitrec_client import RetryPolicy, TlsConfig
from logitrec_client.proto import recommender_pb2_grpc

CLIENT = Path(__file__).resolve().parents[1] / "clients" / "python"
PROJECT = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]


def _floors() -> dict[str, str]:
    floors = {}
    for requirement in PROJECT["dependencies"]:
        # A ceiling is allowed (protobuf's runtime must share the stubs' major version).
        match = re.fullmatch(
            r"([A-Za-z0-9_.-]+)>=([0-9.]+)(,<[0-9.]+)?", requirement.replace(" ", "")
        )
        assert match, f"expected NAME>=VERSION[,<CEILING], got {requirement!r}"
        floors[match[1].lower()] = match[2]
    return floors


def test_dependencies_are_exactly_grpcio_and_protobuf() -> None:
    assert set(_floors()) == {"grpcio", "protobuf"}


def test_dependency_floors_are_what_the_generated_stubs_require() -> None:
    # An older grpcio or protobuf would make `import logitrec_client` fail at once.
    stub_header = (CLIENT / "logitrec_client/_proto/logitrec/v1/recommender_pb2.py").read_text()
    protobuf_generated = re.search(r"# Protobuf Python Version: ([0-9.]+)", stub_header)
    assert protobuf_generated
    assert _floors() == {
        "grpcio": recommender_pb2_grpc.GRPC_GENERATED_VERSION,
        "protobuf": protobuf_generated[1],
    }


def test_the_installed_console_script_runs_the_cli() -> None:
    assert PROJECT["scripts"]["logitrec-client"] == "logitrec_client.cli:main"
    script = Path(sys.executable).with_name("logitrec-client")
    if not script.exists():
        pytest.skip(f"the client is not installed beside {sys.executable}")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: logitrec-client")
    for command in ("recommend", "score", "info", "health"):
        assert command in result.stdout


def test_importing_the_client_pulls_in_no_ml_stack() -> None:
    heavy = ["numpy", "torch", "onnxruntime", "faiss", "polars", "logitrec"]
    probe = f"import sys, logitrec_client; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_settings_that_grpc_would_silently_bend_are_refused() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=6)  # gRPC would quietly cap it at 5
    with pytest.raises(ValueError, match="private_key"):
        TlsConfig(certificate_chain=b"cert only")
