"""Turns a client's connection arguments into gRPC channel options, credentials and metadata."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from logitrec_client._version import __version__
from logitrec_client.config import Keepalive, RetryPolicy, TlsConfig

ChannelOption = tuple[str, Any]


@dataclass(frozen=True)
class ChannelSettings:
    """Everything needed to open a channel and make calls on it."""

    target: str
    options: tuple[ChannelOption, ...]
    credentials: grpc.ChannelCredentials | None
    # Holds the bearer token: kept out of reprs and logs.
    metadata: tuple[tuple[str, str], ...] = field(repr=False)
    timeout: float | None

    def open(self) -> grpc.Channel:
        """A blocking channel."""
        if self.credentials is None:
            return grpc.insecure_channel(self.target, options=self.options)
        return grpc.secure_channel(self.target, self.credentials, options=self.options)

    def open_aio(self) -> grpc.aio.Channel:
        """An asyncio channel (bound to the running event loop once used)."""
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.target, options=self.options)
        return grpc.aio.secure_channel(self.target, self.credentials, options=self.options)

    def deadline(self, timeout: float | None) -> float | None:
        """The call's timeout: its own when given, else the client's default."""
        return self.timeout if timeout is None else timeout


def channel_settings(
    target: str,
    *,
    token: str | None,
    tls: TlsConfig | bool,
    timeout: float | None,
    retry: RetryPolicy,
    keepalive: Keepalive,
    max_message_bytes: int,
    channel_options: Sequence[ChannelOption],
) -> ChannelSettings:
    """ChannelSettings for a client's constructor arguments (explained on the client)."""
    options: list[ChannelOption] = [
        ("grpc.primary_user_agent", f"logitrec-client/{__version__}"),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", int(keepalive.time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive.timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", int(keepalive.without_calls)),
        # gRPC's reconnect backoff (1 s growing to 120 s by default) makes calls fail fast for
        # minutes after a gateway restart, whatever the retry policy; a 1 s ceiling lets the
        # retries find the gateway again as soon as it is back.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.enable_retries", int(retry.enabled)),
        ("grpc.service_config", retry.service_config()),
    ]
    credentials = None
    if tls:
        tls_config = tls if isinstance(tls, TlsConfig) else TlsConfig()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls_config.root_certificates,
            private_key=tls_config.private_key,
            certificate_chain=tls_config.certificate_chain,
        )
        if tls_config.server_name:
            options.append(("grpc.ssl_target_name_override", tls_config.server_name))
    # The caller's own options replace ours of the same name.
    merged = dict(options) | dict(channel_options)
    # The token goes in per-call metadata rather than grpc call credentials: gRPC drops call
    # credentials on plaintext channels, and gateways behind a TLS-terminating proxy or mesh
    # are reached in plaintext. Use TLS wherever the network is not trusted.
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    return ChannelSettings(target, tuple(merged.items()), credentials, metadata, timeout)
