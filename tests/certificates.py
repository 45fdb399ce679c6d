"""Test certificates made by the script the security guide tells operators to use, so the
guide's recipe is exercised by every TLS test."""

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_certificates.sh"


@dataclass(frozen=True)
class Certificates:
    """A private CA and a server (127.0.0.1, localhost) and a client certificate it signed."""

    folder: Path

    def path(self, name: str) -> Path:  # ca.pem, server.pem, server.key, client.pem, client.key
        return self.folder / name

    @property
    def ca(self) -> bytes:
        return self.path("ca.pem").read_bytes()

    @property
    def server_cert(self) -> bytes:
        return self.path("server.pem").read_bytes()

    @property
    def server_key(self) -> bytes:
        return self.path("server.key").read_bytes()

    @property
    def client_cert(self) -> bytes:
        return self.path("client.pem").read_bytes()

    @property
    def client_key(self) -> bytes:
        return self.path("client.key").read_bytes()


def make_certificates(folder: Path) -> Certificates:
    """A new CA and its certificates in `folder` (skips the test without openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    subprocess.run(["bash", str(SCRIPT), str(folder)], check=True, capture_output=True)
    return Certificates(Path(folder))
