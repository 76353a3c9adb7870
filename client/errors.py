"""Errors of the desktop client. Each message is one line that says what went wrong and how to fix it."""

from __future__ import annotations

from streamst.errors import StreamstError


class ClientError(StreamstError):
    """Bad input or setup: an unknown device, a missing file, a server that cannot be reached or
    refuses the stream. The command line or the setup needs fixing (exit status 2)."""

    exit_code = 2


class DeviceError(ClientError):
    """No such input device, or it cannot be opened."""


class ServerUnreachable(ClientError):
    """Nothing answers at the server's address (connection refused, unknown host, timeout, TLS)."""


class ServerRefused(ClientError):
    """The server refused the stream: at the handshake (HTTP 401/403/503) or in answer to `start`."""

    def __init__(self, message: str, code: str, retryable: bool) -> None:
        super().__init__(message)
        self.code = code  # the protocol's stable error code ("unauthorized", "server_busy", ...)
        self.retryable = retryable  # worth trying again later (server busy or restarting)


class StreamFailed(StreamstError):
    """A running stream ended in a way the client cannot recover from (exit status 1)."""

    exit_code = 1
