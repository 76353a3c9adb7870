"""The desktop client against scripted native-protocol servers on 127.0.0.1 (no models): what it
sends, how it reconnects and replays audio, how it stops, and how it reports refusals.

Each scripted server plays one `Session` per connection, in order; it records the `start` and the
audio bytes every connection brought."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import os
import pty
import select
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from streamst import wire
from streamst.audio import decode_audio, float32_to_pcm16, write_wav
from streamst.client.app import Client, ClientOptions
from streamst.client.capture import FileSource
from streamst.client.connection import ConnectionOptions
from streamst.client.display import PlainDisplay
from streamst.client.errors import ClientError, ServerRefused, ServerUnreachable, StreamFailed
from streamst.client.save import open_writer
from streamst.types import SAMPLE_RATE_HZ
from streamst.wire import ErrorCode

BYTES_PER_MS = SAMPLE_RATE_HZ * 2 // 1000
AUDIO_S = 2.0
TEST_TIMEOUT_S = 30


# scripted servers --------------------------------------------------------------------------------------------

Session = Callable[[ServerConnection, bytearray], Awaitable[None]]


@dataclass
class Script:
    sessions: list[Session]
    refusals: list[tuple[int, str]] = field(default_factory=list)  # HTTP answers to the next handshakes
    starts: list[dict] = field(default_factory=list)
    received: list[bytearray] = field(default_factory=list)

    def process_request(self, connection, request):
        if self.refusals:
            status, body = self.refusals.pop(0)
            return connection.respond(HTTPStatus(status), body)
        return None

    async def handler(self, ws: ServerConnection) -> None:
        received = bytearray()
        self.received.append(received)
        start = json.loads(await ws.recv())
        self.starts.append(start)
        session = self.sessions[len(self.received) - 1]
        await session(ws, received)


def _ready(session_id: str = "s") -> str:
    return wire.encode(
        wire.Ready(session_id, "en", "zh", SAMPLE_RATE_HZ, "pcm16", "cascade", None, None, 1000, 262_144, 3600.0, 30.0)
    )


def _final(segment_id: int, text: str, start_ms: int, end_ms: int) -> str:
    return wire.encode(
        wire.Caption("final", segment_id, text, text, "", f"source {segment_id}", start_ms, end_ms, "cascade", end_ms)
    )


def _end(reason: str = "stop") -> str:
    return wire.encode(wire.End(reason, 0, 0))


async def _receive(ws: ServerConnection, received: bytearray, until_ms: float | None = None) -> bool:
    """Collects audio until `until_ms` of it arrived (False) or `stop` arrives (True)."""
    async for message in ws:
        if isinstance(message, bytes):
            received += message
            if until_ms is not None and len(received) >= until_ms * BYTES_PER_MS:
                return False
        elif json.loads(message)["type"] == "stop":
            return True
    return False


async def _finish(ws: ServerConnection, received: bytearray, *finals: str) -> None:
    """Reads until `stop`, then sends the finals and `end`."""
    await _receive(ws, received)
    for final in finals:
        await ws.send(final)
    await ws.send(_end())


@contextlib.asynccontextmanager
async def scripted(script: Script, port: int = 0, tls: ssl.SSLContext | None = None):
    async with serve(script.handler, "127.0.0.1", port, process_request=script.process_request, ssl=tls) as server:
        yield server.sockets[0].getsockname()[1]


# the client --------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int | None
    error: Exception | None
    out: str
    err: str
    saved: list[dict]


@pytest.fixture
def speech(tmp_path):
    """2 s of noise as a 16 kHz WAV, and the PCM16 bytes a client should send of it."""
    path = tmp_path / "noise.wav"
    write_wav(path, np.random.default_rng(0).uniform(-0.5, 0.5, int(AUDIO_S * SAMPLE_RATE_HZ)).astype(np.float32))
    return path, float32_to_pcm16(decode_audio(path))


async def _run_client(
    port: int,
    audio_path,
    tmp_path,
    during: Callable[[Client], Awaitable[None]] | None = None,
    stop_timeout_s: float = 10.0,
    max_reconnect_s: float = 10.0,
    scheme: str = "ws",
    cafile: str | None = None,
) -> Outcome:
    connection = ConnectionOptions(
        url=f"{scheme}://127.0.0.1:{port}{wire.STREAM_PATH}",
        cafile=cafile,
        start=wire.Start("en", "zh", mode="cascade"),
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
        max_reconnect_s=max_reconnect_s,
    )
    options = ClientOptions(connection, max_buffer_ms=10_000, stop_timeout_s=stop_timeout_s)
    saved = tmp_path / "out.jsonl"
    writer = open_writer(saved, "en", "zh")
    client = Client(options, FileSource(audio_path), [writer])
    out, err = io.StringIO(), io.StringIO()
    task = asyncio.create_task(client.run(PlainDisplay(out, err, client.snapshot)))
    if during is not None:
        await during(client)
    code, error = None, None
    try:
        code = await asyncio.wait_for(task, TEST_TIMEOUT_S)
    except (ClientError, StreamFailed) as e:
        error = e
    finally:
        writer.close()
    records = [json.loads(line) for line in saved.read_text().splitlines()]
    return Outcome(code, error, out.getvalue(), err.getvalue(), records)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# streaming and stopping ----------------------------------------------------------------------------------------


def test_streams_the_whole_file_then_stop_and_shows_and_saves_the_finals(speech, tmp_path):
    path, pcm = speech

    async def session(ws, received):
        await ws.send(_ready())
        await ws.send(wire.encode(wire.Caption("partial", 0, "你", "你", "好", "hel", 100, 400, "cascade", 400)))
        await _finish(ws, received, _final(0, "你好。", 100, 900), _final(1, "再见。", 1000, 1800))

    script = Script([session])

    async def main():
        async with scripted(script) as port:
            return await _run_client(port, path, tmp_path)

    outcome = asyncio.run(main())
    assert outcome.code == 0 and outcome.error is None
    assert script.starts == [{"type": "start", "version": 1, "source": "en", "target": "zh", "sample_rate_hz": 16000,
                              "sample_format": "pcm16", "mode": "cascade", "policy": None, "knob": None,
                              "step_ms": None}]  # fmt: skip
    assert bytes(script.received[0]) == pcm, "every sample, in order, as PCM16 at 16 kHz"
    assert outcome.out == "你好。\n再见。\n"
    saved = [(r["segment_id"], r["text"], r["start_ms"]) for r in outcome.saved]
    assert saved == [(0, "你好。", 100), (1, "再见。", 1000)]
    assert "connected: en→zh cascade" in outcome.err and "stopped · 2 captions · saved to" in outcome.err


def test_stop_mid_stream_sends_stop_and_saves_the_final_that_follows(speech, tmp_path):
    path, pcm = speech

    async def session(ws, received):
        await ws.send(_ready())
        await _finish(ws, received, _final(0, "说到一半。", 200, 700))

    script = Script([session])

    async def press_ctrl_c(client):
        await asyncio.sleep(0.8)
        client.request_stop()

    async def main():
        async with scripted(script) as port:
            return await _run_client(port, path, tmp_path, during=press_ctrl_c)

    outcome = asyncio.run(main())
    assert outcome.code == 0
    assert 500 * BYTES_PER_MS <= len(script.received[0]) <= 1500 * BYTES_PER_MS, "capture stopped at the Ctrl-C"
    assert bytes(script.received[0]) == pcm[: len(script.received[0])]
    assert [r["text"] for r in outcome.saved] == ["说到一半。"]


def test_stop_waits_for_the_last_finals_only_so_long(speech, tmp_path):
    path, _ = speech

    async def silent_after_stop(ws, received):
        await ws.send(_ready())
        await _receive(ws, received)
        await ws.wait_closed()  # never answers the stop

    async def press_ctrl_c(client):
        await asyncio.sleep(0.3)
        client.request_stop()

    async def main():
        async with scripted(Script([silent_after_stop])) as port:
            return await _run_client(port, path, tmp_path, during=press_ctrl_c, stop_timeout_s=0.5)

    outcome = asyncio.run(main())
    assert outcome.code == 0
    assert "gave up waiting for the last captions after 0.5 s" in outcome.err


def test_a_second_ctrl_c_quits_at_once(speech, tmp_path):
    path, _ = speech

    async def silent_after_stop(ws, received):
        await ws.send(_ready())
        await _receive(ws, received)
        await ws.wait_closed()  # never answers the stop

    async def press_ctrl_c_twice(client):
        await asyncio.sleep(0.3)
        client.request_stop()
        await asyncio.sleep(0.3)
        client.request_stop()

    async def main():
        async with scripted(Script([silent_after_stop])) as port:
            return await _run_client(port, path, tmp_path, during=press_ctrl_c_twice, stop_timeout_s=20)

    outcome = asyncio.run(main())
    assert outcome.code == 130


# reconnecting ------------------------------------------------------------------------------------------------------


def test_dropped_connection_reconnects_and_replays_the_audio_after_the_last_final(speech, tmp_path):
    path, pcm = speech

    async def dropped(ws, received):
        await ws.send(_ready("first"))
        await _receive(ws, received, until_ms=900)
        await ws.send(_final(0, "一。", 100, 500))
        await _receive(ws, received, until_ms=1300)
        ws.transport.abort()  # no closing handshake, no `end`: as if the server crashed

    async def second(ws, received):
        await ws.send(_ready("second"))
        await _finish(ws, received, _final(0, "二。", 100, 1200))

    script = Script([dropped, second])

    async def main():
        async with scripted(script) as port:
            return await _run_client(port, path, tmp_path)

    outcome = asyncio.run(main())
    assert outcome.code == 0, outcome.err
    assert bytes(script.received[1]) == pcm[500 * BYTES_PER_MS :], "the new session hears everything after 500 ms"
    assert [(r["segment_id"], r["text"], r["start_ms"], r["end_ms"]) for r in outcome.saved] == [
        (0, "一。", 100, 500),
        (1, "二。", 600, 1700),  # placed on the stream's timeline
    ]
    assert "reconnecting: " in outcome.err and "the connection dropped" in outcome.err
    assert outcome.out == "一。\n二。\n"


def test_server_shutdown_reconnects_and_busy_answers_are_retried(speech, tmp_path):
    path, pcm = speech
    busy = wire.encode(wire.Error(ErrorCode.SHUTTING_DOWN, "the server is shutting down; try again later"))

    async def shut_down(ws, received):
        await ws.send(_ready())
        await _receive(ws, received, until_ms=700)
        script.refusals += [(503, busy), (503, busy)]
        await ws.send(_final(0, "一。", 100, 400))
        await ws.send(_end("shutdown"))
        await ws.close(1001)

    async def second(ws, received):
        await ws.send(_ready())
        await _finish(ws, received, _final(0, "二。", 0, 300))

    script = Script([shut_down, second])

    async def main():
        async with scripted(script) as port:
            return await _run_client(port, path, tmp_path)

    outcome = asyncio.run(main())
    assert outcome.code == 0, outcome.err
    assert script.refusals == [], "both refusals were met and retried"
    assert bytes(script.received[1]) == pcm[400 * BYTES_PER_MS :]
    assert [r["text"] for r in outcome.saved] == ["一。", "二。"]
    assert "the server shut down" in outcome.err
    assert "attempt 3" in outcome.err and "HTTP 503 shutting_down" in outcome.err


def test_overloaded_server_gets_a_new_session_without_the_replay(speech, tmp_path):
    path, pcm = speech
    overloaded = wire.Error(ErrorCode.OVERLOADED, "the server fell 20 s behind")

    async def overload(ws, received):
        await ws.send(_ready())
        await _receive(ws, received, until_ms=1000)
        await ws.send(wire.encode(overloaded))
        await ws.send(_end("error"))
        await ws.close(1013)

    async def second(ws, received):
        await ws.send(_ready())
        await _finish(ws, received)

    script = Script([overload, second])

    async def main():
        async with scripted(script) as port:
            return await _run_client(port, path, tmp_path)

    outcome = asyncio.run(main())
    assert outcome.code == 0, outcome.err
    sent_before = len(script.received[0])
    assert bytes(script.received[1]) == pcm[sent_before:], "audio the overloaded session had is not sent again"


def test_reconnecting_gives_up_after_max_reconnect_s(speech, tmp_path):
    path, _ = speech

    async def main():
        port = _free_port()

        async def dropped(ws, received):
            await ws.send(_ready())
            await _receive(ws, received, until_ms=300)
            gone.set()
            ws.transport.abort()

        gone = asyncio.Event()
        server_cm = scripted(Script([dropped]), port)
        await server_cm.__aenter__()

        async def stop_server(client):
            await gone.wait()
            await server_cm.__aexit__(None, None, None)

        return await _run_client(port, path, tmp_path, during=stop_server, max_reconnect_s=1.0)

    outcome = asyncio.run(main())
    assert isinstance(outcome.error, StreamFailed) and outcome.error.exit_code == 1
    assert "gave up reconnecting" in str(outcome.error)


def test_fatal_error_mid_stream_ends_the_client(speech, tmp_path):
    path, _ = speech

    async def failing(ws, received):
        await ws.send(_ready())
        await _receive(ws, received, until_ms=300)
        await ws.send(wire.encode(wire.Error(ErrorCode.INTERNAL_ERROR, "a server bug; see session s")))
        await ws.send(_end("error"))
        await ws.close(1011)

    async def main():
        async with scripted(Script([failing])) as port:
            return await _run_client(port, path, tmp_path)

    outcome = asyncio.run(main())
    assert isinstance(outcome.error, StreamFailed)
    assert str(outcome.error) == "the server ended the stream: a server bug; see session s (internal_error)"


# refusals ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (
            401,
            wire.Error(ErrorCode.UNAUTHORIZED, "this server needs a token: send 'Authorization: Bearer <token>'"),
            "the server refused the connection (HTTP 401 unauthorized): this server needs a token",
        ),
        (
            503,
            wire.Error(ErrorCode.SERVER_BUSY, "the server is full: 8 of 8 sessions in use; try again later"),
            "the server refused the connection (HTTP 503 server_busy): the server is full",
        ),
    ],
)
def test_refused_handshake_is_a_clear_error(speech, tmp_path, status, error, expected):
    path, _ = speech
    script = Script([], refusals=[(status, wire.encode(error))])

    async def main():
        async with scripted(script) as port:
            return await _run_client(port, path, tmp_path)

    outcome = asyncio.run(main())
    assert isinstance(outcome.error, ServerRefused) and outcome.error.exit_code == 2
    assert str(outcome.error).startswith(expected) and "\n" not in str(outcome.error)


def test_refused_start_is_a_clear_error(speech, tmp_path):
    path, _ = speech
    message = "unknown language 'tlh'; GET /v1/languages lists them"

    async def refuse(ws, received):
        await ws.send(wire.encode(wire.Error(ErrorCode.UNSUPPORTED_LANGUAGE, message)))
        await ws.send(_end("error"))
        await ws.close(1008)

    async def main():
        async with scripted(Script([refuse])) as port:
            return await _run_client(port, path, tmp_path)

    outcome = asyncio.run(main())
    assert isinstance(outcome.error, ServerRefused) and outcome.error.code == "unsupported_language"
    assert str(outcome.error) == f"the server refused the stream: {message}"


def test_unreachable_server_is_a_clear_error(speech, tmp_path):
    path, _ = speech
    port = _free_port()
    outcome = asyncio.run(_run_client(port, path, tmp_path))
    assert isinstance(outcome.error, ServerUnreachable) and outcome.error.exit_code == 2
    assert str(outcome.error) == (
        f"cannot reach the server at ws://127.0.0.1:{port}/v1/stream (connection refused); "
        "is streamst-server running there?"
    )


def test_wss_with_a_self_signed_certificate_needs_cafile(speech, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (it makes the test certificate)")
    path, pcm = speech
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)

    async def session(ws, received):
        await ws.send(_ready())
        await _finish(ws, received, _final(0, "安全。", 0, 500))

    script = Script([session, session])

    async def main():
        async with scripted(script, tls=tls) as port:
            untrusted = await _run_client(port, path, tmp_path, scheme="wss")
            trusted = await _run_client(port, path, tmp_path, scheme="wss", cafile=str(cert))
            return untrusted, trusted

    untrusted, trusted = asyncio.run(main())
    assert isinstance(untrusted.error, ServerUnreachable)
    assert "the certificate of 127.0.0.1:" in str(untrusted.error) and "--cafile" in str(untrusted.error)
    assert trusted.code == 0 and trusted.out == "安全。\n"
    assert bytes(script.received[-1]) == pcm


def test_the_connection_survives_a_server_that_closes_without_reading(speech, tmp_path):
    """A server that goes away before `ready` on a reconnection is retried like an unreachable one."""
    path, pcm = speech

    async def dropped(ws, received):
        await ws.send(_ready())
        await _receive(ws, received, until_ms=400)
        ws.transport.abort()

    async def closes_early(ws, received):
        with contextlib.suppress(ConnectionClosed):
            await ws.close(1011)

    async def last(ws, received):
        await ws.send(_ready())
        await _finish(ws, received)

    script = Script([dropped, closes_early, last])

    async def main():
        async with scripted(script) as port:
            return await _run_client(port, path, tmp_path)

    outcome = asyncio.run(main())
    assert outcome.code == 0, outcome.err
    assert bytes(script.received[2]) == pcm
    assert "closed the connection before it was ready" in outcome.err


def test_ctrl_c_before_the_server_is_ready_still_ends_cleanly(speech, tmp_path):
    path, _ = speech
    release = asyncio.Event()

    async def slow_ready(ws, received):
        await release.wait()  # the server is still loading its models
        await ws.send(_ready())
        await _finish(ws, received)

    async def press_ctrl_c(client):
        await asyncio.sleep(0.3)
        client.request_stop()
        await asyncio.sleep(0.3)
        release.set()

    script = Script([slow_ready])

    async def main():
        async with scripted(script) as port:
            return await _run_client(port, path, tmp_path, during=press_ctrl_c)

    outcome = asyncio.run(main())
    assert outcome.code == 0 and outcome.error is None
    assert script.received == [bytearray()], "a file not started yet sends no audio"


# a real terminal ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def scripted_in_thread(script: Script):
    """The scripted server on its own event loop in a thread, for a client running as a subprocess."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    ports: list[int] = []
    stop = asyncio.Event()

    async def serve_until_stopped():
        async with scripted(script) as port:
            ports.append(port)
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve_until_stopped(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield ports[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def _run_in_terminal(args: list[str], columns: int = 80, timeout_s: float = TEST_TIMEOUT_S) -> tuple[int, str, str]:
    """Runs streamst-mic with its stdout on a pseudo-terminal; returns its exit status, what the
    terminal received, and stderr."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "streamst.client.mic", *args],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=subprocess.PIPE,
        env=os.environ | {"TERM": "xterm-256color"},
    )
    os.close(terminal)
    received = bytearray()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        readable, _, _ = select.select([controller], [], [], 0.2)
        if readable:
            try:
                data = os.read(controller, 65536)
            except OSError:  # the terminal closed: the client is gone
                break
            if not data:
                break
            received += data
        elif process.poll() is not None:
            break
    os.close(controller)
    code = process.wait(timeout=10)
    return code, received.decode("utf-8", "replace"), process.stderr.read().decode()


def test_on_a_terminal_committed_text_is_bright_the_tentative_tail_dim_and_a_status_line_below(speech, tmp_path):
    path, _ = speech

    async def session(ws, received):
        await ws.send(_ready())
        await _receive(ws, received, until_ms=600)
        partial = wire.Caption("partial", 0, "你", "你", "好吗", "how are", 100, 600, "cascade", 600)
        await ws.send(wire.encode(partial))
        await _finish(ws, received, _final(0, "你好吗？", 100, 1500))

    with scripted_in_thread(Script([session])) as port:
        code, screen, err = _run_in_terminal(
            ["-s", "en", "-t", "zh", "--file", str(path), "--server", f"127.0.0.1:{port}", "--show-source"]
        )
    assert code == 0, err
    assert err == ""
    assert "\x1b[1m你\x1b[0m\x1b[2m好吗\x1b[0m" in screen, "committed in full colour, the tentative tail dimmed"
    assert "how are" in screen and "source 0" in screen
    assert "\x1b[32mconnected\x1b[0m" in screen and "en→zh cascade" in screen and " dB" in screen
    assert "\x1b[1m你好吗？\x1b[0m\r\n" in screen, "the final stays as a line"
    assert screen.endswith("stopped · 1 caption\r\n\x1b[?25h")
