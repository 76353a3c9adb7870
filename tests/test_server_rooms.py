"""Rooms over real sockets on 127.0.0.1, with the scripted models (tests/scripted.py): a speaker and
listeners in several languages, a late joiner, a room made ahead with POST /v1/rooms, the errors
(bad room, reader key used to speak, full room, a listener that sends audio), abrupt disconnects,
and the counters. Every wait is bounded by an event or a generous timeout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from dataclasses import replace

import numpy as np
import pytest
from scripted import ScriptedEngine, ScriptedTranslator, audio_for, spoken
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamst import wire
from streamst.audio import float32_to_pcm16
from streamst.server.app import App
from streamst.server.config import ServerConfig
from streamst.server.limits import Limits
from streamst.types import SAMPLES_PER_MS
from streamst.wire import ErrorCode

FRAME_MS = 100
SEND_PAUSE_S = 0.01  # 10x real time: the scripted models keep up easily
TALK = spoken(
    "Good morning everyone. Today we talk about the weather. It is sunny and warm. Tomorrow it will rain.",
    start_ms=300,
)
TALK_MS = TALK[-1].end_ms + 1_500
TEST_TIMEOUT_S = 60.0
CONFIG = ServerConfig(host="127.0.0.1", port=0, funasr_port=None, realtime=False, preload=True)


@contextlib.asynccontextmanager
async def serving(limits: Limits = Limits(), translator: ScriptedTranslator | None = None, **config):
    app = App(ScriptedEngine(TALK, translator or ScriptedTranslator()), replace(CONFIG, limits=limits, **config))
    await app.start()
    try:
        yield app
    finally:
        await app.shutdown()


def frames(audio: np.ndarray) -> list[bytes]:
    step = FRAME_MS * SAMPLES_PER_MS
    return [float32_to_pcm16(audio[i : i + step]) for i in range(0, len(audio), step)]


FRAMES = frames(audio_for(TALK, TALK_MS))


class Peer:
    """One WebSocket that records every message it receives and how it closed."""

    def __init__(self, url: str, **connect_args) -> None:
        self.url = url
        self.connect_args = connect_args
        self.messages: list[dict] = []
        self.close_code: int | None = None
        self.first = asyncio.Event()  # ready, joined or an error arrived
        self.ws = None
        self._reader: asyncio.Task | None = None

    async def open(self, *texts: str) -> Peer:
        self.ws = await connect(self.url, max_queue=None, **self.connect_args)
        for text in texts:
            await self.ws.send(text)
        self._reader = asyncio.create_task(self._read())
        await asyncio.wait_for(self.first.wait(), TEST_TIMEOUT_S)
        return self

    async def closed(self) -> Peer:
        await asyncio.wait_for(self._reader, TEST_TIMEOUT_S)
        return self

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for text in self.ws:
                message = json.loads(text)
                self.messages.append(message)
                if message["type"] in ("ready", "joined", "error"):
                    self.first.set()
        self.close_code = self.ws.close_code
        self.first.set()

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m["type"] == kind]

    def finals(self) -> list[str]:
        return [m["committed_text"] for m in self.of_type("final")]


def _ws(app: App, path: str) -> str:
    return f"ws://127.0.0.1:{app.ports[0]}{path}"


def _http(app: App, path: str, method: str = "GET", headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{app.ports[0]}{path}", method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def _get(app: App, path: str, method: str = "GET", headers: dict | None = None) -> tuple[int, bytes]:
    return await asyncio.to_thread(_http, app, path, method, headers)


def _start(**fields) -> str:
    return json.dumps({"type": "start", "source": "en", "target": "de", "room": wire.NEW_ROOM} | fields)


async def _speak(app: App, **fields) -> Peer:
    return await Peer(_ws(app, wire.STREAM_PATH)).open(_start(**fields))


async def _listen(app: App, room_id: str, key: str, target: str) -> Peer:
    return await Peer(_ws(app, f"{wire.captions_path(room_id)}?target={target}&key={key}")).open()


async def _send(peer: Peer, payloads: list[bytes]) -> None:
    for payload in payloads:
        await peer.ws.send(payload)
        await asyncio.sleep(SEND_PAUSE_S)


async def _until(condition, timeout_s: float = TEST_TIMEOUT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def _refusal(e: InvalidStatus) -> tuple[int, dict]:
    return e.response.status_code, json.loads(e.response.body)


# the room at work -----------------------------------------------------------------------------------


def test_listeners_in_three_languages_share_one_translation_each_and_a_late_joiner_catches_up():
    async def main():
        translator = ScriptedTranslator()
        async with serving(translator=translator) as app:
            speaker = await _speak(app)
            (ready,) = speaker.of_type("ready")
            room_id, key = ready["room_id"], ready["read_key"]
            listeners = [await _listen(app, room_id, key, target) for target in ["de", "es", "zh"] * 3]
            await _send(speaker, FRAMES[: len(FRAMES) // 2])
            await _until(lambda: len(listeners[0].finals()) >= 1)
            late = await _listen(app, room_id, key, "es")
            room = app.rooms.get(room_id).describe()
            await _send(speaker, FRAMES[len(FRAMES) // 2 :])
            await speaker.ws.send('{"type": "stop"}')
            await speaker.closed()
            for listener in [*listeners, late]:
                await listener.closed()
            status = app.status()["rooms"]
            return speaker, listeners, late, room, status, translator

    speaker, listeners, late, room, status, translator = asyncio.run(main())
    assert room["source_pipelines"] == 1 and room["translation_streams"] == 3 and room["listeners"] == 10
    assert room["languages"]["de"] == {"listeners": 3, "readers": 4, "finals": room["finals"], "translates": True}
    expected = ["GOOD MORNING EVERYONE.", "TODAY WE TALK ABOUT THE WEATHER.", "IT IS SUNNY AND WARM.",
                "TOMORROW IT WILL RAIN."]  # fmt: skip
    assert speaker.finals() == expected
    for listener in listeners:
        assert listener.finals() == expected, listener.messages
        assert listener.messages[0]["type"] == "joined" and listener.messages[0]["n_history"] == 0
        audio_ms = speaker.of_type("end")[0]["audio_ms"]
        assert listener.messages[-1] == {"type": "end", "reason": "stop", "audio_ms": audio_ms, "n_segments": 4}
        assert listener.close_code == wire.CLOSE_NORMAL
    joined = late.messages[0]
    assert joined["type"] == "joined" and joined["source"] == "en" and joined["n_history"] >= 1
    assert late.finals() == expected  # history, then live: nothing missing, nothing twice
    assert [m["segment_id"] for m in late.of_type("final")] == [0, 1, 2, 3]
    assert len(translator.calls) == 3 * len(expected)  # one per language and sentence, not per listener
    assert status == {"rooms": 0, "max_rooms": 4, "source_pipelines": 0, "translation_streams": 0, "listeners": 0}


def test_a_room_made_with_post_waits_for_its_speaker_and_listeners_may_come_first():
    async def main():
        async with serving(token="s3cret") as app:
            auth = {"Authorization": "Bearer s3cret"}
            no_token, _ = await _get(app, wire.ROOMS_PATH, "POST")
            status, body = await _get(app, wire.ROOMS_PATH, "POST", auth)
            made = json.loads(body)
            early = await _listen(app, made["room_id"], made["read_key"], "zh")
            counters = json.loads((await _get(app, f"{wire.ROOMS_PATH}/{made['room_id']}"))[1])
            page_status, page = await _get(app, wire.viewer_path(made["room_id"]))
            qr_status, qr = await _get(app, f"{wire.ROOMS_PATH}/{made['room_id']}/qr.svg?key={made['read_key']}")
            qr_refused, _ = await _get(app, f"{wire.ROOMS_PATH}/{made['room_id']}/qr.svg?key=guess")
            start = _start(room=made["room_id"], room_key=made["speak_key"], target="es")
            speaker = await Peer(_ws(app, wire.STREAM_PATH), additional_headers=auth).open(start)
            await _send(speaker, FRAMES)
            await speaker.ws.send('{"type": "stop"}')
            await speaker.closed()
            await early.closed()
            return no_token, status, made, early, counters, (page_status, page), (qr_status, qr), qr_refused, speaker

    no_token, status, made, early, counters, page, qr, qr_refused, speaker = asyncio.run(main())
    assert no_token == 401 and status == 201
    assert made["speak_key"] != made["read_key"] and made["captions_path"] == wire.captions_path(made["room_id"])
    assert early.messages[0] == {"type": "joined", "room_id": made["room_id"], "target": "zh", "source": None,
                                 "n_history": 0, "version": 1}  # fmt: skip
    assert counters["state"] == "waiting" and counters["languages"]["zh"]["listeners"] == 1
    assert page[0] == 200 and b"<html" in page[1]
    assert qr[0] == 200 and qr[1].startswith(b"<svg") and qr_refused == 403
    assert early.finals() == speaker.finals() and len(early.finals()) == 4
    assert speaker.of_type("ready")[0]["room_id"] == made["room_id"]


# errors and limits ---------------------------------------------------------------------------------


def test_bad_room_reader_key_and_full_room_get_clear_errors():
    async def main():
        async with serving(Limits(max_listeners_per_room=2, max_languages_per_room=2)) as app:
            speaker = await _speak(app)
            ready = speaker.of_type("ready")[0]
            room_id, key = ready["room_id"], ready["read_key"]
            refusals = {}
            for name, path in {
                "unknown room": f"{wire.captions_path('nosuchroom')}?target=de&key={key}",
                "wrong key": f"{wire.captions_path(room_id)}?target=de&key=guess",
                "no target": f"{wire.captions_path(room_id)}?key={key}",
                "unknown language": f"{wire.captions_path(room_id)}?target=klingon&key={key}",
                "third language": f"{wire.captions_path(room_id)}?target=zh&key={key}&x=es",
            }.items():
                if name == "third language":
                    await _listen(app, room_id, key, "es")  # de (the speaker's) and es: the limit
                with pytest.raises(InvalidStatus) as raised:
                    await connect(_ws(app, path))
                refusals[name] = _refusal(raised.value)
            sender = await _listen(app, room_id, key, "de")
            with pytest.raises(InvalidStatus) as raised:
                await connect(_ws(app, f"{wire.captions_path(room_id)}?target=de&key={key}"))
            refusals["full"] = _refusal(raised.value)
            read_key_speaks = await Peer(_ws(app, wire.STREAM_PATH)).open(_start(room=room_id, room_key=key))
            unknown_speaks = await Peer(_ws(app, wire.STREAM_PATH)).open(_start(room="nosuchroom", room_key=key))
            direct_room = await Peer(_ws(app, wire.STREAM_PATH)).open(_start(mode="direct"))
            await sender.ws.send(b"\x00\x00" * 160)  # a listener sending audio
            for peer in (read_key_speaks, unknown_speaks, direct_room, sender):
                await peer.closed()
            await speaker.ws.send('{"type": "stop"}')
            await speaker.closed()
            return refusals, read_key_speaks, unknown_speaks, direct_room, sender

    refusals, read_key_speaks, unknown_speaks, direct_room, sender = asyncio.run(main())
    assert refusals["unknown room"][0] == 404 and refusals["unknown room"][1]["code"] == "unknown_room"
    assert refusals["wrong key"][0] == 403 and refusals["wrong key"][1]["code"] == "forbidden"
    assert refusals["no target"][0] == 400 and "?target=" in refusals["no target"][1]["message"]
    assert refusals["unknown language"][0] == 400 and refusals["unknown language"][1]["code"] == "unsupported_language"
    assert refusals["third language"][0] == 503 and refusals["third language"][1]["code"] == "room_full"
    assert "de, es" in refusals["third language"][1]["message"]
    assert refusals["full"][0] == 503 and refusals["full"][1]["code"] == "room_full"
    assert "2 of 2 listeners" in refusals["full"][1]["message"]
    for peer, code in ((read_key_speaks, ErrorCode.FORBIDDEN), (unknown_speaks, ErrorCode.UNKNOWN_ROOM),
                       (direct_room, ErrorCode.UNSUPPORTED_MODE), (sender, ErrorCode.FORBIDDEN)):  # fmt: skip
        (error,) = peer.of_type("error")
        assert error["code"] == code and error["fatal"] and len(error["message"]) > 30, error
        assert peer.messages[-1]["type"] == "end" and peer.close_code == wire.CLOSE_POLICY_VIOLATION
    assert "read key" in read_key_speaks.of_type("error")[0]["message"]


def test_listeners_that_vanish_leave_nothing_behind():
    async def main():
        async with serving() as app:
            speaker = await _speak(app)
            ready = speaker.of_type("ready")[0]
            room_id, key = ready["room_id"], ready["read_key"]
            room = app.rooms.get(room_id)
            before = (room.describe(), app.status()["rooms"])
            listeners = [await _listen(app, room_id, key, target) for target in ("de", "es", "zh", "zh", "fr")]
            await _send(speaker, FRAMES[:20])
            during = room.describe()
            for listener in listeners:
                listener.ws.transport.abort()  # no closing handshake: the TCP connection just drops
            await _until(lambda: room.listeners.n_active == 0 and sorted(room.languages) == ["de"])
            after = (room.describe(), app.status()["rooms"])
            await _send(speaker, FRAMES[20:])
            await speaker.ws.send('{"type": "stop"}')
            await speaker.closed()
            return before, during, after, app.status()["rooms"], speaker

    before, during, after, at_end, speaker = asyncio.run(main())
    assert during["listeners"] == 5 and during["translation_streams"] == 4
    for counters in ("listeners", "translation_streams", "source_pipelines"):
        assert after[0][counters] == before[0][counters]
    assert after[1] == before[1]
    (german,) = after[0]["languages"].values()
    assert german | {"finals": 0} == before[0]["languages"]["de"] and list(after[0]["languages"]) == ["de"]
    assert at_end["rooms"] == 0 and at_end["listeners"] == 0
    assert speaker.of_type("end")[0]["reason"] == "stop" and len(speaker.finals()) == 4


def test_a_room_nobody_speaks_into_ends_and_its_listeners_get_end():
    async def main():
        async with serving(Limits(room_wait_s=0.5)) as app:
            made = json.loads((await _get(app, wire.ROOMS_PATH, "POST"))[1])
            listener = await _listen(app, made["room_id"], made["read_key"], "de")
            await listener.closed()
            gone, _ = await _get(app, f"{wire.ROOMS_PATH}/{made['room_id']}")
            return listener, gone, app.status()["rooms"]

    listener, gone, rooms = asyncio.run(main())
    assert [m["type"] for m in listener.messages] == ["joined", "end"] and listener.close_code == wire.CLOSE_NORMAL
    assert gone == 404 and rooms["rooms"] == 0


def test_rooms_beyond_the_limit_are_refused():
    async def main():
        async with serving(Limits(max_rooms=1)) as app:
            first = await _get(app, wire.ROOMS_PATH, "POST")
            second = await _get(app, wire.ROOMS_PATH, "POST")
            speaker = await Peer(_ws(app, wire.STREAM_PATH)).open(_start())
            await speaker.closed()
            wrong_method = await _get(app, wire.ROOMS_PATH)
            return first, second, speaker, wrong_method

    first, second, speaker, wrong_method = asyncio.run(main())
    assert first[0] == 201
    assert second[0] == 503 and json.loads(second[1])["code"] == "server_busy" and b"1 of 1 rooms" in second[1]
    assert speaker.of_type("error")[0]["code"] == "server_busy"
    assert wrong_method[0] == 405


def test_a_speaker_that_vanishes_ends_the_room_for_its_listeners():
    async def main():
        async with serving() as app:
            speaker = await _speak(app)
            ready = speaker.of_type("ready")[0]
            listener = await _listen(app, ready["room_id"], ready["read_key"], "es")
            await _send(speaker, FRAMES[: len(FRAMES) // 2])
            await _until(lambda: len(listener.finals()) >= 1)
            speaker.ws.transport.abort()
            await listener.closed()
            return listener, app.status()["rooms"], (await _get(app, f"{wire.ROOMS_PATH}/{ready['room_id']}"))[0]

    listener, rooms, gone = asyncio.run(main())
    assert listener.messages[-1]["type"] == "end" and listener.close_code == wire.CLOSE_NORMAL
    assert listener.finals()[0] == "GOOD MORNING EVERYONE."
    assert rooms == {"rooms": 0, "max_rooms": 4, "source_pipelines": 0, "translation_streams": 0, "listeners": 0}
    assert gone == 404
