"""TLS for the gateway's gRPC port, with certificates that can be replaced while serving.

gRPC asks `ServerCertificates` for news at every new TLS handshake (dynamic server
credentials); `reload` reads the files again (serving.credentials calls it when they changed,
and on SIGHUP) and hands the next handshake the new pair. Connections already open keep
the certificate they were made with. A file caught half-written, a key that does not match
its certificate or a bad PEM is an InputError, and the previous certificates stay.
"""

import logging
import ssl
import threading
from pathlib import Path

import grpc

from logitrec.errors import InputError

log = logging.getLogger("logitrec.gateway")


class ServerCertificates:
    """The gateway's certificate chain and key, and (for mutual TLS) the CA its callers'
    certificates must be signed by."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert, self.key, self.client_ca = Path(cert), Path(key), client_ca
        self._lock = threading.Lock()
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._initial = self._read()

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._initial, self._next_configuration, require_client_authentication=self.mutual
        )

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((Path(self.client_ca),) if self.client_ca else ())

    def reload(self) -> None:
        """Read the files again; the next handshake uses them. InputError (the previous
        certificates stay) names what is wrong."""
        configuration = self._read()
        with self._lock:
            self._pending = configuration

    # -- internals --------------------------------------------------------------------------
    def _next_configuration(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's fetcher (runs in gRPC's thread at each handshake): new certificates once."""
        with self._lock:
            configuration, self._pending = self._pending, None
        return configuration

    def _read(self) -> grpc.ServerCertificateConfiguration:
        """Read and check the files; InputError names the one that is wrong."""
        cert, key = _read_bytes(self.cert), _read_bytes(self.key)
        try:  # the key matches the chain, and both parse: what a handshake would find out
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.cert, self.key)
        except (ssl.SSLError, OSError) as error:
            raise InputError(
                f"{self.cert}, {self.key}: not a PEM certificate chain and its private key "
                f"({error})"
            ) from None
        if (_read_bytes(self.cert), _read_bytes(self.key)) != (cert, key):
            raise InputError(f"{self.cert}: changed while being read (rotation in progress?)")
        client_ca = None
        if self.client_ca is not None:
            client_ca = _read_bytes(self.client_ca)
            try:
                ssl.create_default_context(cadata=client_ca.decode("ascii"))
            except (ssl.SSLError, ValueError) as error:
                raise InputError(f"{self.client_ca}: not PEM CA certificates ({error})") from None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
