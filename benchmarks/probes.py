"""Scripted clients for `streamst-bench faults` and `soak`: handshakes written by hand (to send the
headers no WebSocket library lets through), short WebSocket exchanges that record what the server
answered, a FunASR-protocol stream, and the bad inputs a server must refuse with the right code.

Everything connects to 127.0.0.1 only, and every wait is bounded.

    answer = await raw_upgrade(port, extra=[("Origin", "a"), ("Origin", "b")])
    answer.summary()                                # "HTTP 400"
    probe = NATIVE_DEEP_NESTING
    (await probe.send(port)).summary() == probe.expected
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from streamst import wire
from streamst.client.stream import MS_PER_S, pcm_frames
from streamst.wire import ErrorCode

LOOPBACK = "127.0.0.1"
FUNASR_PATH = "/funasr"  # the FunASR endpoint on the main port
FUNASR_SUBPROTOCOL = "binary"
HANDSHAKE_TIMEOUT_S = 10.0
REPLY_TIMEOUT_S = 30.0  # how long a probe waits for the server to answer and close
FRAME_S = 0.1  # pace of the frames a probe sends
N_KEY_BYTES = 16  # Sec-WebSocket-Key: 16 random bytes, base64
N_HUGE_DIGITS = 5_000  # beyond Python's int-from-string limit (4300 digits)
N_NESTING = 100_000  # beyond the JSON parser's recursion limit
EMPTY_FRAMES_MAX_S = 45.0  # empty frames are sent this long at most (the default idle timeout is 30 s)
HTTP_SWITCHING_PROTOCOLS = 101
UPGRADE_HEADERS = ("Host", "Upgrade")  # headers `raw_upgrade` always sends
PCM16 = wire.Start("", "")  # the audio every probe sends: 16 kHz PCM16, mono
N_SAMPLE_BYTES = wire.BYTES_PER_SAMPLE[PCM16.sample_format]
ABORTED = "aborted"  # the probe dropped the connection itself, as it meant to


@dataclass(frozen=True)
class Answer:
    """What the server answered: a refused handshake's HTTP status, or a WebSocket session's error
    codes and close code."""

    http_status: int | None = None  # the handshake's status when it was refused or read by hand
    http_code: str = ""  # the `code` of a refused handshake's JSON body
    error_codes: tuple[str, ...] = ()  # native `error` codes and FunASR `error_code`s, in order
    close_code: int | None = None  # the server's close code (1006: the connection dropped)
    messages: tuple[dict[str, Any], ...] = ()  # every text message of the session, as JSON
    failure: str = ""  # why nothing came back; ABORTED when the probe dropped the connection itself

    def summary(self) -> str:
        """One line to compare with a probe's `expected`: "HTTP 403 forbidden_origin",
        "error bad_json, close 1008", "close 1009", "aborted", "no answer: …"."""
        if self.failure:
            return self.failure if self.failure == ABORTED else f"no answer: {self.failure}"
        if self.http_status is not None:
            return " ".join(filter(None, (f"HTTP {self.http_status}", self.http_code)))
        parts = [f"error {code}" for code in self.error_codes]
        parts.append(f"close {self.close_code}" if self.close_code is not None else "no close")
        return ", ".join(parts)


def session_answer(code: ErrorCode) -> str:
    """The summary of a session the server ends with this error code."""
    return f"error {code}, close {wire.close_code(code)}"


def refused_answer(status: int, code: ErrorCode | None = None) -> str:
    """The summary of a handshake refused with this status (and error code in the body)."""
    return f"HTTP {status} {code}" if code else f"HTTP {status}"


# ---------------------------------------------------------------------------------------
# Handshakes by hand


async def raw_upgrade(
    port: int, path: str = wire.STREAM_PATH, *, host: str | None = None, extra: Sequence[tuple[str, str]] = ()
) -> Answer:
    """A WebSocket upgrade request written byte by byte: Host (`host`, default 127.0.0.1:PORT),
    Upgrade, Connection, the key and version, then `extra` as given (repeats and all). The
    connection is dropped once the status and body are read."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host or f'{LOOPBACK}:{port}'}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(N_KEY_BYTES)).decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in extra),
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            return await _send_request(port, request)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
        return Answer(failure=f"{type(e).__name__}: {e}")


async def _send_request(port: int, request: bytes) -> Answer:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(request)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *header_lines = head.strip().split("\r\n")
        status = int(status_line.split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
        n_body = int(headers.get("content-length", "0")) if status != HTTP_SWITCHING_PROTOCOLS else 0
        body = await reader.readexactly(n_body) if n_body else b""
    finally:
        writer.transport.abort()
    return Answer(http_status=status, http_code=_body_code(body))


def _body_code(body: bytes) -> str:
    """The error code of a refusal's JSON body ("" for a plain-text body)."""
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(body).get("code", ""))
    return ""


# ---------------------------------------------------------------------------------------
# WebSocket exchanges


async def exchange(
    port: int,
    path: str,
    opening: Sequence[str | bytes],
    paced: Sequence[str | bytes] | Callable[[dict[str, Any] | None], Sequence[str | bytes]] = (),
    *,
    await_reply: bool = True,
    interval_s: float = FRAME_S,
    subprotocols: Sequence[str] | None = None,
    timeout_s: float = REPLY_TIMEOUT_S,
    abort: bool = False,
) -> Answer:
    """Sends `opening` at once; then (after the server's first message, with `await_reply`) `paced`,
    one every `interval_s`, until the server closes; then waits up to `timeout_s` for its close.
    `paced` may be a function of the server's first message (None if it sent none). With `abort`
    the probe drops the connection after its last frame instead."""
    url = f"ws://{LOOPBACK}:{port}{path}"
    try:
        ws = await connect(
            url, subprotocols=subprotocols, open_timeout=HANDSHAKE_TIMEOUT_S, compression=None, max_size=None
        )
    except InvalidStatus as e:
        return Answer(http_status=e.response.status_code, http_code=_body_code(e.response.body or b""))
    except (OSError, TimeoutError, InvalidHandshake) as e:
        return Answer(failure=f"{type(e).__name__}: {e}")
    messages: list[dict[str, Any]] = []
    first = asyncio.Event()
    reader = asyncio.create_task(_read(ws, messages, first))
    try:
        await _send_all(ws, opening)
        if paced:
            if await_reply:
                await _wait_first(first, reader, timeout_s)
            frames = paced(messages[0] if messages else None) if callable(paced) else paced
            await _send_paced(ws, frames, interval_s, reader)
        if abort:
            ws.transport.abort()
            return Answer(messages=tuple(messages), failure=ABORTED)
        if not await _closed_in_time(reader, timeout_s):
            return Answer(messages=tuple(messages), failure=f"the server did not close within {timeout_s:g} s")
    finally:
        reader.cancel()
        ws.transport.abort()
    return _session_answer(messages, ws.close_code)


async def _read(ws: ClientConnection, messages: list[dict[str, Any]], first: asyncio.Event) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for text in ws:
            with contextlib.suppress(ValueError):
                messages.append(json.loads(text))
            first.set()


async def _send_all(ws: ClientConnection, frames: Sequence[str | bytes]) -> None:
    with contextlib.suppress(ConnectionClosed):
        for frame in frames:
            await ws.send(frame)


async def _wait_first(first: asyncio.Event, reader: asyncio.Task[None], timeout_s: float) -> None:
    waiter = asyncio.create_task(first.wait())
    await asyncio.wait({waiter, reader}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()


async def _send_paced(
    ws: ClientConnection, frames: Sequence[str | bytes], interval_s: float, reader: asyncio.Task[None]
) -> None:
    with contextlib.suppress(ConnectionClosed):
        for frame in frames:
            if reader.done():
                return
            await ws.send(frame)
            await asyncio.sleep(interval_s)


async def _closed_in_time(reader: asyncio.Task[None], timeout_s: float) -> bool:
    done, _ = await asyncio.wait({reader}, timeout=timeout_s)
    return bool(done)


def _session_answer(messages: list[dict[str, Any]], close_code: int | None) -> Answer:
    codes = [m.get("code") if m.get("type") == "error" else m.get("error_code") for m in messages]
    return Answer(error_codes=tuple(str(c) for c in codes if c), close_code=close_code, messages=tuple(messages))


# ---------------------------------------------------------------------------------------
# FunASR


def funasr_config(source: str, target: str, mode: str = "2pass", wav_name: str = "probe") -> str:
    """A FunASR client's first message, with our language fields."""
    config = {"mode": mode, "wav_name": wav_name, "is_speaking": True, "audio_fs": PCM16.sample_rate_hz}
    return json.dumps(config | {"source_lang": source, "target_lang": target})


async def stream_funasr(
    port: int, path: str, pcm: bytes, source: str, target: str, *, frame_s: float, timeout_s: float
) -> Answer:
    """A FunASR 2pass client: its configuration, `pcm` (16 kHz PCM16) in frames of `frame_s` at
    real-time pace, then `{"is_speaking": false}`; every message until the server closes."""
    frames: list[str | bytes] = list(pcm_frames(pcm, PCM16, frame_s * MS_PER_S))
    end = json.dumps({"is_speaking": False})
    opening = [funasr_config(source, target)]
    return await exchange(
        port, path, opening, [*frames, end], await_reply=False, interval_s=frame_s,
        subprotocols=[FUNASR_SUBPROTOCOL], timeout_s=timeout_s,
    )  # fmt: skip


def funasr_finals(messages: Sequence[dict[str, Any]]) -> list[str]:
    """The texts of a 2pass client's finished segments (`2pass-offline` messages with text)."""
    return [m["text"] for m in messages if m.get("mode") == "2pass-offline" and m.get("is_final") and m.get("text")]


def funasr_ack(messages: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The end acknowledgement (`is_end`), or None."""
    return next((m for m in messages if m.get("is_end")), None)


# ---------------------------------------------------------------------------------------
# Bad inputs


@dataclass(frozen=True)
class Probe:
    """One bad input and what a server that handles it answers."""

    name: str  # what it sends, for people
    send: Callable[[int], Awaitable[Answer]]  # against the server's main port
    expected: str | None  # the answer's summary; None: anything but a crash


NATIVE_START = {"type": "start", "source": "en", "target": "zh"}
HUGE_NUMBER = "1" * N_HUGE_DIGITS
DEEP_NESTING = "[" * N_NESTING
EVIL_HOST = "evil.example"


def _native(*opening: str | bytes) -> Callable[[int], Awaitable[Answer]]:
    return lambda port: exchange(port, wire.STREAM_PATH, opening)


def _funasr(*opening: str | bytes) -> Callable[[int], Awaitable[Answer]]:
    return lambda port: exchange(port, FUNASR_PATH, opening, subprotocols=[FUNASR_SUBPROTOCOL])


def _duplicate(name: str, value: Callable[[int], str]) -> Callable[[int], Awaitable[Answer]]:
    """`name` twice: once more for the headers every upgrade has, twice for the others."""
    n_more = 1 if name in UPGRADE_HEADERS else 2
    return lambda port: raw_upgrade(port, extra=[(name, value(port))] * n_more)


async def _evil_origin(port: int) -> Answer:
    """A page of another site, reached through DNS rebinding: its own name as Origin and as Host."""
    return await raw_upgrade(port, host=f"{EVIL_HOST}:{port}", extra=[("Origin", f"http://{EVIL_HOST}:{port}")])


def _with_origin(origin: str) -> Callable[[int], Awaitable[Answer]]:
    return lambda port: raw_upgrade(port, extra=[("Origin", origin)])


async def _empty_frames(port: int) -> Answer:
    n_frames = round(EMPTY_FRAMES_MAX_S / FRAME_S)
    return await exchange(port, wire.STREAM_PATH, [json.dumps(NATIVE_START)], [b""] * n_frames)


def _oversized_frame(factor: float) -> Callable[[int], Awaitable[Answer]]:
    """A frame of `factor` times the max_frame_bytes that `ready` gives, plus one sample."""

    def frame(ready: dict[str, Any] | None) -> list[bytes]:
        return [bytes(int(ready["max_frame_bytes"] * factor) + N_SAMPLE_BYTES)] if ready else []

    return lambda port: exchange(port, wire.STREAM_PATH, [json.dumps(NATIVE_START)], frame)


async def _connect_and_close(port: int) -> Answer:
    """TCP connect, half a request line, then drop the connection."""
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            _, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.write(b"GET /v1/str")
            await writer.drain()
            writer.transport.abort()
    except (OSError, TimeoutError) as e:
        return Answer(failure=f"{type(e).__name__}: {e}")
    return Answer(failure=ABORTED)


def _abort_while_streaming(speech: bytes) -> Callable[[int], Awaitable[Answer]]:
    frames = _frames(speech)

    def send(port: int) -> Awaitable[Answer]:
        return exchange(port, wire.STREAM_PATH, [json.dumps(NATIVE_START | {"mode": "cascade"})], frames, abort=True)

    return send


def _slow_reader(speech: bytes) -> Callable[[int], Awaitable[Answer]]:
    """Streams `speech` at real time and reads nothing after `ready`; then drops the connection."""
    frames = _frames(speech)

    async def send(port: int) -> Answer:
        url = f"ws://{LOOPBACK}:{port}{wire.STREAM_PATH}"
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S + REPLY_TIMEOUT_S + len(frames) * FRAME_S):
                ws = await connect(url, open_timeout=HANDSHAKE_TIMEOUT_S, compression=None, max_queue=1)
                try:
                    await ws.send(json.dumps(NATIVE_START | {"mode": "cascade"}))
                    await ws.recv()
                    for frame in frames:
                        await ws.send(frame)
                        await asyncio.sleep(FRAME_S)
                finally:
                    ws.transport.abort()
        except ConnectionClosed as e:
            return Answer(close_code=e.rcvd.code if e.rcvd else None)
        except InvalidStatus as e:
            return Answer(http_status=e.response.status_code, http_code=_body_code(e.response.body or b""))
        except (OSError, TimeoutError, InvalidHandshake) as e:
            return Answer(failure=f"{type(e).__name__}: {e}")
        return Answer(failure=ABORTED)

    return send


def _frames(pcm: bytes) -> list[str | bytes]:
    return list(pcm_frames(pcm, PCM16, FRAME_S * MS_PER_S))


BAD_JSON = session_answer(ErrorCode.BAD_JSON)
NATIVE_NOT_JSON = Probe("a text frame that is not JSON (native)", _native("{not json"), BAD_JSON)
NATIVE_HUGE_NUMBER = Probe(
    f"`start` with a {N_HUGE_DIGITS}-digit number (native)",
    _native(json.dumps(NATIVE_START)[:-1] + f', "sample_rate_hz": {HUGE_NUMBER}}}'),
    BAD_JSON,
)
NATIVE_DEEP_NESTING = Probe(f'"[" x {N_NESTING} (native)', _native(DEEP_NESTING), BAD_JSON)
FUNASR_HUGE_NUMBER = Probe(
    f"configuration with a {N_HUGE_DIGITS}-digit number (FunASR)",
    _funasr(f'{{"mode": "2pass", "audio_fs": {HUGE_NUMBER}}}'),
    BAD_JSON,
)
FUNASR_DEEP_NESTING = Probe(f'"[" x {N_NESTING} (FunASR)', _funasr(DEEP_NESTING), BAD_JSON)
DUPLICATE_HEADERS = tuple(
    Probe(f"two {name} headers", _duplicate(name, value), refused_answer(400))
    for name, value in (
        ("Origin", lambda port: f"http://{LOOPBACK}:{port}"),
        ("Host", lambda port: f"{LOOPBACK}:{port}"),
        ("Upgrade", lambda port: "websocket"),
    )
)
EMPTY_FRAMES = Probe("empty binary frames only, every 100 ms", _empty_frames, session_answer(ErrorCode.IDLE_TIMEOUT))
EVIL_ORIGIN = Probe(
    f"Origin http://{EVIL_HOST}:PORT and Host {EVIL_HOST}:PORT",
    _evil_origin,
    refused_answer(403, ErrorCode.FORBIDDEN_ORIGIN),
)


def allowed_origin(origin: str) -> Probe:
    """An upgrade from a page the server allows: it must go through."""
    return Probe(f"Origin {origin} (allowed)", _with_origin(origin), refused_answer(HTTP_SWITCHING_PROTOCOLS))


def abuses(speech: bytes) -> tuple[Probe, ...]:
    """Every bad input, for a server started with `--allow-origin` (so that EVIL_ORIGIN is refused);
    `speech` (16 kHz PCM16, a few seconds) is what the aborting and the slow clients stream."""
    return (
        NATIVE_NOT_JSON,
        NATIVE_HUGE_NUMBER,
        NATIVE_DEEP_NESTING,
        FUNASR_HUGE_NUMBER,
        FUNASR_DEEP_NESTING,
        *DUPLICATE_HEADERS,
        EVIL_ORIGIN,
        Probe("a frame just over max_frame_bytes", _oversized_frame(1.0), session_answer(ErrorCode.FRAME_TOO_LARGE)),
        Probe("a frame of 3x max_frame_bytes", _oversized_frame(3.0), f"close {wire.CLOSE_MESSAGE_TOO_BIG}"),
        EMPTY_FRAMES,
        Probe("TCP connect, half a request line, drop", _connect_and_close, ABORTED),
        Probe("start, speech, then drop the connection", _abort_while_streaming(speech), ABORTED),
        Probe("a client that never reads", _slow_reader(speech), None),
    )
