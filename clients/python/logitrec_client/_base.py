"""What the blocking and the asyncio client share: construction from connection arguments."""

from __future__ import annotations

from collections.abc import Sequence

from logitrec_client._channel import ChannelOption, ChannelSettings, channel_settings
from logitrec_client.config import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT_S,
    Keepalive,
    RetryPolicy,
    TlsConfig,
)

_DEFAULT_RETRY = RetryPolicy()
_DEFAULT_KEEPALIVE = Keepalive()


class ClientBase:
    """Connection arguments shared by RecommenderClient and AsyncRecommenderClient."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: TlsConfig | bool = False,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy = _DEFAULT_RETRY,
        keepalive: Keepalive = _DEFAULT_KEEPALIVE,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        channel_options: Sequence[ChannelOption] = (),
    ) -> None:
        """Open one channel to the gateway at `target` ("host:port"); nothing connects until the
        first call.

        Args:
            target: the gateway's address, "host:port" (any gRPC target, e.g. "dns:///host:port").
            token: sent as `authorization: Bearer <token>` metadata on every call.
            tls: False for plaintext; True for TLS trusting the system's certificates; a
                TlsConfig for custom root certificates, a client certificate or a server name.
            timeout: default deadline of each call in seconds, retries included (None: none).
                A call's own `timeout=` overrides it.
            retry: which failures gRPC retries and how it backs off (see RetryPolicy);
                `NO_RETRIES` turns retries off.
            keepalive: HTTP/2 keepalive pings (see Keepalive).
            max_message_bytes: largest request or response accepted, in bytes.
            channel_options: extra gRPC channel options; they override the client's own.
        """
        self._settings: ChannelSettings = channel_settings(
            target,
            token=token,
            tls=tls,
            timeout=timeout,
            retry=retry,
            keepalive=keepalive,
            max_message_bytes=max_message_bytes,
            channel_options=channel_options,
        )
        self._connect()

    def _connect(self) -> None:
        """Open the channel and its stubs (blocking or asyncio: the subclass decides)."""
        raise NotImplementedError

    @property
    def target(self) -> str:
        """The gateway's address, as given."""
        return self._settings.target

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target!r})"
