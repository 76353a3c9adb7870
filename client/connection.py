"""One caption stream over the native protocol, kept alive across dropped connections.

    stream = CaptionStream(options, buffer, timeline, listener)
    task = asyncio.create_task(stream.run())   # connects, sends `start`, streams the buffer
    ...buffer.append(pcm16); stream.audio_added()
    stream.finish_audio()                      # sends what is left, then `stop`; run() returns at `end`

The first connection must succeed: an unreachable server or a refused handshake raises at once.
Later, when the connection drops or the server restarts, the stream reconnects with exponential
backoff while the capture keeps filling the bounded replay buffer (`streamst.client.buffer`), and
the new server session hears the audio again from the end of the last finished segment. Captions of
every session are placed on one timeline: segment ids keep counting and times are stream times.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import ssl
import time
from dataclasses import dataclass, field, replace
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from streamst import wire
from streamst.client.buffer import ReplayBuffer, Timeline
from streamst.client.errors import ClientError, ServerRefused, ServerUnreachable, StreamFailed
from streamst.types import SAMPLES_PER_MS, ms_to_samples, samples_to_ms
from streamst.wire import ErrorCode, ProtocolError

log = logging.getLogger("streamst.client.connection")

DEFAULT_SERVER = "ws://127.0.0.1:8765"
RETRYABLE_HTTP_STATUSES = frozenset({502, 503, 504})
# Errors after which a new session can carry on; any other error ends the client.
RECONNECT_CODES = frozenset(
    {
        ErrorCode.SESSION_TOO_LONG,
        ErrorCode.IDLE_TIMEOUT,
        ErrorCode.OVERLOADED,
        ErrorCode.TOO_SLOW,
        ErrorCode.SHUTTING_DOWN,
        ErrorCode.SERVER_BUSY,
    }
)
BACKOFF_JITTER = 0.2  # each delay is shortened by up to this fraction, so clients do not retry in step


def stream_url(server: str) -> str:
    """The native endpoint for what a person typed: "host:port", "ws://host:port", "https://host/",
    or a full "ws(s)://host:port/v1/stream?token=…" URL (kept as it is)."""
    text = server.strip()
    if "://" not in text:
        text = f"ws://{text}"
    parts = urlsplit(text)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise ClientError(
            f"{server!r} is not a server address; give host:port or a ws:// / wss:// URL such as {DEFAULT_SERVER}"
        )
    path = parts.path if parts.path not in ("", "/") else wire.STREAM_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _where(url: str) -> str:
    return urlsplit(url).netloc


@dataclass(frozen=True)
class ConnectionOptions:
    url: str  # the native endpoint, ws:// or wss:// …/v1/stream (see `stream_url`)
    start: wire.Start  # what every session asks for: languages, rate, mode, policy
    token: str | None = None  # sent as "Authorization: Bearer <token>"
    cafile: str | None = None  # a CA or self-signed certificate to trust for wss://
    open_timeout_s: float = 10.0  # TCP, TLS and WebSocket handshake
    ready_timeout_s: float = 180.0  # `start` → `ready`; a server that just started may still load its models
    backoff_initial_s: float = 0.5  # first wait before reconnecting; doubles per attempt
    backoff_max_s: float = 8.0  # longest wait between attempts
    max_reconnect_s: float = 300.0  # give up after this long without a working connection

    def __post_init__(self) -> None:
        for name in ("open_timeout_s", "ready_timeout_s", "backoff_initial_s", "backoff_max_s", "max_reconnect_s"):
            if not getattr(self, name) > 0:
                raise ClientError(f"{name} must be positive, got {getattr(self, name)}")


class State(enum.StrEnum):
    CONNECTING = "connecting"
    WAITING = "waiting"  # connected; waiting for the server's `ready`
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    STOPPING = "stopping"  # `stop` sent; waiting for the last finals
    STOPPED = "stopped"


@dataclass(frozen=True)
class Status:
    """What the status line shows about the connection."""

    state: State
    server: str  # host:port
    detail: str = ""  # why it is reconnecting, or what it waits for
    mode: str = ""  # the mode (and policy) in force, from `ready`
    attempt: int = 0  # reconnection attempt, from 1
    retry_at_s: float | None = None  # time.monotonic() of the next attempt
    buffered_ms: int = 0  # captured audio not sent yet
    dropped_ms: int = 0  # audio lost to the buffer limit while disconnected
    commit_lag_s: float | None = None  # how long after its audio was captured the last commit arrived
    n_sessions: int = 0  # server sessions so far (more than one after reconnections)


class Listener(Protocol):
    def on_caption(self, caption: wire.Caption) -> None:
        """A caption, its segment id and times already on the stream's timeline."""

    def on_status(self, status: Status) -> None:
        """The connection changed state."""


@dataclass
class _SessionOutcome:
    end: wire.End | None = None
    error: wire.Error | None = None
    n_finals: int = 0
    close_code: int | None = None
    close_reason: str = ""


@dataclass(frozen=True)
class _Placement:
    """Where one server session sits on the stream: its audio starts at `offset` (samples), its
    segment 0 is the stream's segment `first_segment`."""

    offset: int
    first_segment: int

    def place(self, caption: wire.Caption) -> wire.Caption:
        offset_ms = samples_to_ms(self.offset)
        return replace(
            caption,
            segment_id=self.first_segment + caption.segment_id,
            start_ms=caption.start_ms + offset_ms,
            end_ms=caption.end_ms + offset_ms,
            audio_ms=caption.audio_ms + offset_ms,
        )


@dataclass
class _Counters:
    n_sessions: int = 0
    n_finals: int = 0  # finals over all sessions: the next session's first segment id
    commit_lag_s: float | None = None
    placement: _Placement = field(default_factory=lambda: _Placement(0, 0))


class CaptionStream:
    def __init__(
        self, options: ConnectionOptions, buffer: ReplayBuffer, timeline: Timeline, listener: Listener
    ) -> None:
        self.options = options
        self.buffer = buffer
        self.timeline = timeline
        self.listener = listener
        self.ready: wire.Ready | None = None
        self.first_ready = asyncio.Event()  # set once the first session is ready
        self._audio_event = asyncio.Event()
        self._audio_done = False
        self._counters = _Counters()
        self._status = Status(State.CONNECTING, _where(options.url))

    # the capture side ------------------------------------------------------------------------------

    def audio_added(self) -> None:
        """New frames are in the buffer."""
        self._audio_event.set()

    def finish_audio(self) -> None:
        """No more audio: send what the buffer holds, then `stop`."""
        self._audio_done = True
        self._audio_event.set()

    @property
    def status(self) -> Status:
        return replace(
            self._status,
            buffered_ms=samples_to_ms(self.buffer.unsent_samples),
            dropped_ms=samples_to_ms(self.buffer.dropped_samples),
            commit_lag_s=self._counters.commit_lag_s,
            n_sessions=self._counters.n_sessions,
        )

    def _set_status(self, state: State, **fields) -> None:
        fields = {"detail": "", "attempt": 0, "retry_at_s": None, **fields}
        self._status = replace(self._status, state=state, **fields)
        self.listener.on_status(self.status)

    # the connection ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Streams until `end` follows our `stop`. Raises ClientError when the first connection fails
        or the server refuses the stream, StreamFailed when reconnecting gives up."""
        ws, ready = await self._open()
        while True:
            outcome = await self._session(ws, ready)
            if self._finished(outcome):
                self._set_status(State.STOPPED)
                return
            ws, ready = await self._reconnect(_describe(outcome))

    async def _open(self) -> tuple[ClientConnection, wire.Ready]:
        if self._counters.n_sessions == 0:
            self._set_status(State.CONNECTING)
        options = self.options
        ws = await open_connection(options.url, options.token, options.cafile, options.open_timeout_s)
        try:
            self._set_status(State.WAITING, detail="waiting for the server to get ready")
            return ws, await self._start(ws)
        except BaseException:
            await ws.close()
            raise

    async def _start(self, ws: ClientConnection) -> wire.Ready:
        """Sends `start`; returns `ready`, or raises with the server's refusal."""
        try:
            await ws.send(wire.encode(self.options.start))
            async with asyncio.timeout(self.options.ready_timeout_s):
                while True:
                    message = parse_message(await ws.recv())
                    if isinstance(message, wire.Ready):
                        return message
                    if isinstance(message, wire.Error) and message.fatal:
                        raise ServerRefused(
                            f"the server refused the stream: {message.message}",
                            str(message.code),
                            retryable=message.code in RECONNECT_CODES,
                        )
        except ConnectionClosed as e:
            raise ServerUnreachable(
                f"the server at {self.options.url} closed the connection before it was ready"
            ) from e
        except TimeoutError as e:
            raise ServerUnreachable(
                f"the server at {self.options.url} was not ready within {self.options.ready_timeout_s:.0f} s"
            ) from e

    async def _reconnect(self, reason: str) -> tuple[ClientConnection, wire.Ready]:
        log.info("connection lost (%s); reconnecting", reason)
        lost_at_s = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            delay_s = self._backoff_s(attempt)
            if time.monotonic() + delay_s - lost_at_s > self.options.max_reconnect_s:
                raise StreamFailed(
                    f"gave up reconnecting to {self.options.url} after {self.options.max_reconnect_s:.0f} s "
                    f"({reason}); restart streamst-mic when the server is back"
                )
            self._status = replace(
                self._status,
                state=State.RECONNECTING,
                detail=reason,
                attempt=attempt,
                retry_at_s=time.monotonic() + delay_s,
            )
            self.listener.on_status(self.status)
            await asyncio.sleep(delay_s)
            try:
                return await self._open()
            except ServerRefused as e:
                if not e.retryable:
                    raise
                reason = str(e)
            except ServerUnreachable as e:
                reason = str(e)
            log.info("reconnection attempt %d failed: %s", attempt, reason)

    def _backoff_s(self, attempt: int) -> float:
        delay_s = min(self.options.backoff_max_s, self.options.backoff_initial_s * 2 ** (attempt - 1))
        return delay_s * (1.0 - BACKOFF_JITTER * random.random())

    def _finished(self, outcome: _SessionOutcome) -> bool:
        """True when the stream is over; raises when it cannot go on; False to reconnect."""
        if outcome.end is not None and outcome.end.reason == "stop":
            return True
        if outcome.error is not None and outcome.error.code not in RECONNECT_CODES:
            raise StreamFailed(f"the server ended the stream: {outcome.error.message} ({outcome.error.code})")
        if outcome.error is not None and outcome.error.code == ErrorCode.OVERLOADED:
            self.buffer.discard_sent()
        return self._audio_done and self.buffer.n_samples == 0

    # one server session -----------------------------------------------------------------------------

    async def _session(self, ws: ClientConnection, ready: wire.Ready) -> _SessionOutcome:
        counters = self._counters
        counters.n_sessions += 1
        counters.placement = _Placement(self.buffer.rewind(), counters.n_finals)
        self.ready = ready
        self.first_ready.set()
        log.info(
            "session %s ready (%s, audio from %d ms)",
            ready.session_id,
            _mode(ready),
            samples_to_ms(counters.placement.offset),
        )
        self._set_status(State.CONNECTED, mode=_mode(ready))
        outcome = _SessionOutcome()
        sender = asyncio.create_task(self._send(ws), name="send-audio")
        try:
            await self._receive(ws, outcome)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            await ws.close()
        outcome.close_code, outcome.close_reason = ws.close_code, ws.close_reason or ""
        counters.n_finals += outcome.n_finals
        return outcome

    async def _send(self, ws: ClientConnection) -> None:
        try:
            while True:
                self._audio_event.clear()
                frame = self.buffer.next_unsent()
                if frame is not None:
                    await ws.send(frame.data)
                    self.buffer.mark_sent(frame)
                elif self._audio_done:
                    await ws.send(wire.encode(wire.Stop()))
                    self._set_status(State.STOPPING)
                    return
                else:
                    await self._audio_event.wait()
        except ConnectionClosed:
            return

    async def _receive(self, ws: ClientConnection, outcome: _SessionOutcome) -> None:
        try:
            async for text in ws:
                message = parse_message(text)
                if isinstance(message, wire.Caption):
                    self._on_caption(message, outcome)
                elif isinstance(message, wire.Error):
                    log.log(logging.WARNING if message.fatal else logging.INFO, "server: %s", message.message)
                    if message.fatal:
                        outcome.error = message
                elif isinstance(message, wire.End):
                    outcome.end = message
        except ConnectionClosed:
            pass

    def _on_caption(self, caption: wire.Caption, outcome: _SessionOutcome) -> None:
        placement = self._counters.placement
        placed = placement.place(caption)
        if caption.type == "final":
            outcome.n_finals += 1
            self.buffer.ack(placement.offset + ms_to_samples(caption.end_ms))
        if caption.committed_delta:
            captured_s = self.timeline.captured_at(placed.audio_ms * SAMPLES_PER_MS)
            if captured_s is not None:
                self._counters.commit_lag_s = max(0.0, time.monotonic() - captured_s)
        self.listener.on_caption(placed)


async def open_connection(
    url: str, token: str | None = None, cafile: str | None = None, open_timeout_s: float = 10.0
) -> ClientConnection:
    """The WebSocket handshake with a native endpoint; raises a ClientError that says why it failed.

    `token` goes in "Authorization: Bearer <token>"; `cafile` is a certificate to trust for wss://.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else None
    tls = _tls_context(cafile) if url.startswith("wss://") else None
    try:
        return await connect(url, additional_headers=headers, open_timeout=open_timeout_s, compression=None, ssl=tls)
    except InvalidStatus as e:
        raise _refusal(e) from e
    except InvalidURI as e:
        raise ClientError(f"{url} is not a WebSocket URL; give host:port or ws://host:port") from e
    except ssl.SSLCertVerificationError as e:
        raise ServerUnreachable(
            f"the certificate of {_where(url)} is not trusted ({e.verify_message}); "
            "give the server's certificate with --cafile"
        ) from e
    except (OSError, TimeoutError, InvalidHandshake) as e:
        raise ServerUnreachable(
            f"cannot reach the server at {url} ({_reason(e)}); is streamst-server running there?"
        ) from e


def parse_message(text: str | bytes) -> wire.ServerMessage | None:
    """A server's text frame as a message; None (logged) for binary frames and messages this client does not know."""
    if isinstance(text, bytes):
        return None
    try:
        return wire.parse_server_message(text)
    except ProtocolError as e:
        log.warning("ignored a message the client does not understand: %s", e)
        return None


def _refusal(e: InvalidStatus) -> ServerRefused:
    status = e.response.status_code
    body = (e.response.body or b"").decode("utf-8", "replace").strip()
    code, message = "", body or e.response.reason_phrase
    with contextlib.suppress(ProtocolError):
        error = wire.parse_server_message(body)
        if isinstance(error, wire.Error):
            code, message = str(error.code), error.message
    if status == 404 and not code:
        message = f"no stream endpoint at that path ({message.strip()})"
    return ServerRefused(
        f"the server refused the connection (HTTP {status}{f' {code}' if code else ''}): {message}",
        code or str(status),
        retryable=status in RETRYABLE_HTTP_STATUSES,
    )


def _reason(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__


def _describe(outcome: _SessionOutcome) -> str:
    if outcome.error is not None:
        return f"{outcome.error.code}: {outcome.error.message}"
    if outcome.end is not None and outcome.end.reason == "shutdown":
        return "the server shut down"
    if outcome.close_code is None or outcome.close_code == 1006:
        return "the connection dropped"
    return f"the server closed the connection ({outcome.close_code} {outcome.close_reason})".strip()


def _mode(ready: wire.Ready) -> str:
    if ready.policy is None:
        return ready.mode
    knob = "" if ready.knob is None else f" {ready.knob:g}"
    return f"{ready.mode} {ready.policy}{knob}"


def _tls_context(cafile: str | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as e:
        raise ClientError(f"cannot use {cafile} as a certificate to trust ({e}); give a PEM file") from e
