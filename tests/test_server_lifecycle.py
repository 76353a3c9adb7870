"""How sessions end, over real sockets on 127.0.0.1, with the scripted models (tests/scripted.py):
shutdown while clients keep streaming, a finish cut short by its limit, the idle timeout and the
session lifetime. Every wait is bounded by an event or a generous timeout, so the tests hold on a
loaded machine."""

from __future__ import annotations

import asyncio
import contextlib
import json

import numpy as np
from scripted import ScriptedEngine, ScriptedTranslator, audio_for, spoken
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamst import wire
from streamst.audio import float32_to_pcm16
from streamst.server.app import App
from streamst.server.config import ServerConfig
from streamst.server.limits import Limits
from streamst.types import SAMPLES_PER_MS

FRAME_MS = 100
TALK = spoken(" ".join(["Good morning everyone, today we talk about the weather."] * 4), start_ms=300)
TALK_MS = TALK[-1].end_ms + 1_500
TEST_TIMEOUT_S = 120.0


@contextlib.asynccontextmanager
async def serving(limits: Limits, translator: ScriptedTranslator | None = None):
    app = App(ScriptedEngine(TALK, translator), ServerConfig(host="127.0.0.1", port=0, funasr_port=None, limits=limits))
    await app.start()
    try:
        yield app
    finally:
        await app.shutdown()


def frames(audio: np.ndarray) -> list[bytes]:
    step = FRAME_MS * SAMPLES_PER_MS
    return [float32_to_pcm16(audio[i : i + step]) for i in range(0, len(audio), step)]


class Client:
    """Streams at real time on one connection and records every message and the close code."""

    def __init__(self, server: App | str, **start) -> None:
        """`server`: an app on 127.0.0.1, or a native stream URL (a balancer's, say)."""
        self.url = server if isinstance(server, str) else f"ws://127.0.0.1:{server.ports[0]}{wire.STREAM_PATH}"
        self.start = json.dumps({"type": "start", "source": "en", "target": "de", "mode": "direct"} | start)
        self.messages: list[dict] = []
        self.close_code: int | None = None
        self.ready = asyncio.Event()

    async def run(self, payloads: list[bytes], stop: bool = True, on_sent=None) -> None:
        async with connect(self.url, max_queue=None, open_timeout=20) as ws:
            await ws.send(self.start)
            reader = asyncio.create_task(self._read(ws))
            await asyncio.wait_for(self.ready.wait(), TEST_TIMEOUT_S)
            with contextlib.suppress(ConnectionClosed):
                for i, payload in enumerate(payloads):
                    if reader.done():  # the server ended the session
                        break
                    await ws.send(payload)
                    if on_sent is not None:
                        on_sent(i)
                    await asyncio.sleep(FRAME_MS / 1000)
                if stop:
                    await ws.send('{"type": "stop"}')
            await asyncio.wait_for(reader, TEST_TIMEOUT_S)
            self.close_code = ws.close_code

    async def _read(self, ws) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for text in ws:
                message = json.loads(text)
                self.messages.append(message)
                if message["type"] == "ready":
                    self.ready.set()

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m["type"] == kind]


def test_shutdown_while_a_client_keeps_streaming_delivers_every_final():
    """The client goes on sending after the server decided to stop: the server must keep reading
    (answering pings) until its finals are sent, or the keepalive cuts them off."""

    async def main():
        limits = Limits(ping_interval_s=0.3, ping_timeout_s=0.3, finish_timeout_s=60)
        async with serving(limits, ScriptedTranslator(sleep_s=2.0)) as app:
            client = Client(app)
            stopping: list[asyncio.Task] = []

            def shut_down_after_3_s(i: int) -> None:
                if i == 3_000 // FRAME_MS and not stopping:
                    stopping.append(asyncio.create_task(app.shutdown()))

            await client.run(frames(audio_for(TALK, TALK_MS)), stop=False, on_sent=shut_down_after_3_s)
            await asyncio.gather(*stopping)
            return client

    client = asyncio.run(asyncio.wait_for(main(), TEST_TIMEOUT_S))
    finals = [m for m in client.of_type("final") if m["committed_text"]]
    assert finals, client.messages
    assert "GOOD MORNING" in finals[0]["committed_text"]
    (end,) = client.of_type("end")
    assert end["reason"] == "shutdown" and end["n_segments"] >= len(finals)
    assert client.messages[-1] == end and not client.of_type("error")
    assert client.close_code == wire.CLOSE_GOING_AWAY


def test_a_finish_cut_short_by_its_limit_says_what_is_missing():
    async def main():
        limits = Limits(finish_timeout_s=0.1)
        async with serving(limits, ScriptedTranslator(sleep_s=1.0)) as app:
            client = Client(app, mode="cascade")
            await client.run(frames(audio_for(TALK, 2_500)))
            return client

    client = asyncio.run(asyncio.wait_for(main(), TEST_TIMEOUT_S))
    (error,) = client.of_type("error")
    assert error["code"] == "finish_timeout" and "is missing" in error["message"], error
    (end,) = client.of_type("end")
    assert end["reason"] == "error"
    assert client.close_code == wire.CLOSE_TRY_AGAIN_LATER


def test_empty_frames_do_not_keep_a_session_alive():
    async def main():
        async with serving(Limits(idle_timeout_s=1.0)) as app:
            client = Client(app)
            await client.run([b""] * 100, stop=False)  # 10 s of empty frames, if nothing ends it first
            return client

    client = asyncio.run(asyncio.wait_for(main(), TEST_TIMEOUT_S))
    (error,) = client.of_type("error")
    assert error["code"] == "idle_timeout"
    assert client.of_type("end")[0]["audio_ms"] == 0


def test_a_session_ends_at_its_lifetime_however_it_streams():
    async def main():
        async with serving(Limits(max_lifetime_s=2.0)) as app:
            client = Client(app)
            await client.run(frames(audio_for(TALK, TALK_MS)), stop=False)
            return client

    client = asyncio.run(asyncio.wait_for(main(), TEST_TIMEOUT_S))
    (error,) = client.of_type("error")
    assert error["code"] == "session_too_long" and "2 s" in error["message"]
    (end,) = client.of_type("end")
    assert end["audio_ms"] < TALK_MS / 2


async def _readyz(app: App) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", app.ports[0])
    writer.write(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    body = await reader.readexactly(length)
    writer.close()
    return int(head.split(b" ")[1]), body.decode()


def test_readyz_turns_unready_while_the_server_is_full_and_ready_again_when_a_session_ends():
    """A balancer's health check sends new sessions elsewhere while every slot is taken."""

    async def main():
        async with serving(Limits(max_sessions=1)) as app:
            app.engine.load()
            before = await _readyz(app)
            async with connect(f"ws://127.0.0.1:{app.ports[0]}{wire.STREAM_PATH}") as ws:
                await ws.send(json.dumps({"type": "start", "source": "en", "target": "de"}))
                assert json.loads(await ws.recv())["type"] == "ready"
                full = await _readyz(app)
                await ws.send('{"type": "stop"}')
                async for _ in ws:
                    pass
            after = await _readyz(app)
            for _ in range(50):  # the slot is given back when the server's handler has ended
                if after[0] == 200:
                    break
                await asyncio.sleep(0.1)
                after = await _readyz(app)
            return before, full, after

    before, full, after = asyncio.run(asyncio.wait_for(main(), TEST_TIMEOUT_S))
    assert before == (200, "ready\n")
    assert full[0] == 503 and "full (1 of 1 sessions)" in full[1]
    assert after == (200, "ready\n")


def test_while_the_decoder_does_not_answer_readyz_says_why_and_new_sessions_are_refused_with_engine_error():
    """A replica whose decoder on another server stopped answering takes no new sessions (a
    balancer sends them to another replica) and takes them again once it answers."""
    from streamst.errors import TranslatorUnavailableError

    class Unreachable(ScriptedTranslator):
        down = True

        def check_reachable(self) -> None:
            if self.down:
                raise TranslatorUnavailableError("cannot reach the translation server at http://127.0.0.1:9/v1")

    translator = Unreachable()

    async def main():
        async with serving(Limits(), translator) as app:
            app.engine.load()
            await app.decoder.probe()
            ready_down = await _readyz(app)
            try:
                async with connect(f"ws://127.0.0.1:{app.ports[0]}{wire.STREAM_PATH}"):
                    refused = (101, b"")
            except InvalidStatus as e:
                refused = (e.response.status_code, e.response.body)
            translator.down = False
            await app.decoder.probe()
            return ready_down, refused, await _readyz(app), app.status()

    ready_down, refused, ready_up, status = asyncio.run(asyncio.wait_for(main(), TEST_TIMEOUT_S))
    assert ready_down[0] == 503 and "cannot reach the translation server at http://127.0.0.1:9/v1" in ready_down[1]
    assert refused[0] == 503 and b"engine_error" in refused[1] and b"http://127.0.0.1:9/v1" in refused[1], refused
    assert ready_up == (200, "ready\n")
    assert status["accepting"] and status["decoder_problem"] is None


def test_a_translation_server_that_is_down_ends_the_stream_with_engine_error_naming_it():
    """Every translation fails as the remote translator fails when its server is gone: the direct
    steps fall back, the segment's close fails too, and the client gets engine_error with the
    message (the URL to check), then end; never a hang or an internal_error."""
    from streamst.errors import TranslatorUnavailableError

    class DownTranslator(ScriptedTranslator):
        def translate(self, *args, **kwargs):
            raise TranslatorUnavailableError("cannot reach the translation server at http://127.0.0.1:9/v1")

    async def main():
        async with serving(Limits(finish_timeout_s=30), DownTranslator()) as app:
            client = Client(app)
            short = spoken("Good morning everyone.", start_ms=300)
            await client.run(frames(audio_for(short, short[-1].end_ms + 300)))
            return client

    client = asyncio.run(asyncio.wait_for(main(), TEST_TIMEOUT_S))
    (error,) = client.of_type("error")
    assert error["code"] == "engine_error" and "http://127.0.0.1:9/v1" in error["message"], error
    assert client.messages[-1]["type"] == "end"
