"""Connection settings a client is built with: retries, keepalive and TLS."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

SERVICE_NAME = "logitrec.v1.RecommenderService"
DEFAULT_TARGET = "localhost:50051"
DEFAULT_TIMEOUT_S = 10.0
# gRPC's own default (4 MiB) is too small for large RecommendBatch answers.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# gRPC caps maxAttempts at 5 silently; we refuse more so the setting means what it says.
_GRPC_MAX_ATTEMPTS = 5


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Retries of UNAVAILABLE and RESOURCE_EXHAUSTED answers, done by gRPC itself.

    The n-th retry waits min(initial_backoff_s * backoff_multiplier**(n-1), max_backoff_s),
    jittered by +-20% (gRPC core's backoff). Every attempt counts against the one call deadline.
    `max_attempts=1` turns retries off.

    Retry throttling makes a client that keeps failing stop retrying, so an overloaded gateway is
    not hit harder: each failure spends one of `throttle_max_tokens` tokens, each success earns
    0.1 back, and retries pause while half or fewer are left. gRPC keeps one token count per
    target for the whole process. `throttle_max_tokens=0` turns throttling off.
    """

    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    backoff_multiplier: float = 2.0
    throttle_max_tokens: int = 10

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= _GRPC_MAX_ATTEMPTS:
            limit = _GRPC_MAX_ATTEMPTS
            raise ValueError(f"max_attempts must be 1 to {limit}, not {self.max_attempts}")
        # Durations travel as "<seconds>s" strings with millisecond resolution.
        if self.initial_backoff_s < 0.001 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("need 0.001 <= initial_backoff_s <= max_backoff_s")
        if self.backoff_multiplier <= 0 or self.throttle_max_tokens < 0:
            raise ValueError("backoff_multiplier must be > 0 and throttle_max_tokens >= 0")

    @property
    def enabled(self) -> bool:
        """Whether failed attempts are retried at all."""
        return self.max_attempts > 1

    def service_config(self) -> str:
        """The gRPC service config (JSON) that applies this policy to RecommenderService."""
        config: dict[str, object] = {}
        if self.enabled:
            config["methodConfig"] = [
                {
                    "name": [{"service": SERVICE_NAME}],
                    "retryPolicy": {
                        "maxAttempts": self.max_attempts,
                        "initialBackoff": f"{self.initial_backoff_s:.3f}s",
                        "maxBackoff": f"{self.max_backoff_s:.3f}s",
                        "backoffMultiplier": self.backoff_multiplier,
                        # Never INVALID_ARGUMENT, NOT_FOUND or DEADLINE_EXCEEDED: the same
                        # request would fail the same way.
                        "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
                    },
                }
            ]
            if self.throttle_max_tokens:
                config["retryThrottling"] = {
                    "maxTokens": self.throttle_max_tokens,
                    "tokenRatio": 0.1,
                }
        return json.dumps(config)


NO_RETRIES = RetryPolicy(max_attempts=1)


@dataclass(frozen=True, kw_only=True)
class Keepalive:
    """HTTP/2 keepalive pings that detect a dead connection (e.g. one a load balancer dropped).

    Servers refuse pings more often than every 5 minutes on idle connections unless configured
    to allow them, so pings on idle connections (`without_calls`) are off by default.
    """

    time_s: float = 60.0
    timeout_s: float = 20.0
    without_calls: bool = False


@dataclass(frozen=True, kw_only=True)
class TlsConfig:
    """TLS for the channel: server verification and, optionally, a client certificate (mTLS).

    `root_certificates=None` trusts the system's certificate store. `server_name` overrides the
    host name the server's certificate must match (for certificates issued to a name other than
    the target's host).
    """

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("a client certificate needs both certificate_chain and private_key")

    @classmethod
    def from_files(
        cls,
        root_certificates: str | Path | None = None,
        certificate_chain: str | Path | None = None,
        private_key: str | Path | None = None,
        server_name: str | None = None,
    ) -> TlsConfig:
        """A TlsConfig read from PEM files (any of them may be left out)."""

        def read(path: str | Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return cls(
            root_certificates=read(root_certificates),
            certificate_chain=read(certificate_chain),
            private_key=read(private_key),
            server_name=server_name,
        )
