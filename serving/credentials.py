"""What callers are checked against, kept current while serving: the TLS certificates and the
bearer tokens, read again when their files change (polled) or on SIGHUP.

A reload that fails (a half-written file, a bad PEM, a tokens file with an error) is logged
and the previous credentials stay, so a botched rotation never locks callers out or takes
the port down; the next change or SIGHUP tries again.
"""

import logging
import os
from pathlib import Path

from logitrec.errors import InputError
from serving.auth import TokenTable, load_tokens
from serving.config import ServeConfig
from serving.tls import ServerCertificates

log = logging.getLogger("logitrec.gateway")


def files_signature(paths) -> tuple:
    """Changes when any of the files is replaced, rewritten or removed."""
    signature = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            signature.append((str(path), None))
            continue
        signature.append((str(path), stat.st_mtime_ns, stat.st_size, stat.st_ino))
    return tuple(signature)


class Credentials:
    """Read at start (InputError: the gateway does not start), then `reload`ed."""

    def __init__(self, config: ServeConfig) -> None:
        self.tokens_file: Path | None = config.tokens_file
        self.tokens: TokenTable = load_tokens(self.tokens_file)
        self.certificates = (
            ServerCertificates(config.tls_cert, config.tls_key, config.tls_client_ca)
            if config.tls
            else None
        )
        self._signatures = self._current_signatures()

    @property
    def authenticating(self) -> bool:
        """Callers need a token (decided at start: a gateway never silently opens up)."""
        return len(self.tokens) > 0

    def _current_signatures(self) -> dict[str, tuple]:
        tokens = (self.tokens_file,) if self.tokens_file else ()
        certificates = self.certificates.paths if self.certificates else ()
        return {"tokens": files_signature(tokens), "tls": files_signature(certificates)}

    def reload(self, *, force: bool = False) -> None:
        """Read what changed since the last reload (everything when `force`)."""
        current = self._current_signatures()
        if self.tokens_file and (force or current["tokens"] != self._signatures["tokens"]):
            try:
                tokens = load_tokens(self.tokens_file)
            except InputError as error:
                log.error("tokens not reloaded, the previous ones stay: %s", error)
            else:
                self.tokens = tokens
                names = ", ".join(sorted(c.name for c in tokens.credentials))
                log.info("tokens reloaded from %s: %s", self.tokens_file, names)
                self._signatures["tokens"] = current["tokens"]
        if self.certificates and (force or current["tls"] != self._signatures["tls"]):
            try:
                self.certificates.reload()
            except InputError as error:
                log.error("TLS files not reloaded, the previous certificates stay: %s", error)
            else:
                log.info("TLS certificates reloaded from %s", self.certificates.cert)
                self._signatures["tls"] = current["tls"]
