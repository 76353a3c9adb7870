"""The service over real sockets, for everything that is decided before an engine session exists:
bad `start` messages, audio before `start`, HTTP routes, tokens, origins, capacity, timeouts.

The engine here is the real one, never loaded: each of these requests fails (or is answered) before
a session would need the models, and the test checks that they stayed unloaded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from dataclasses import replace

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamst import wire
from streamst.engine import Engine
from streamst.options import DEFAULT_MODE, MODES
from streamst.server.app import App
from streamst.server.config import ServerConfig
from streamst.server.limits import Limits
from streamst.wire import ErrorCode

CONFIG = ServerConfig(host="127.0.0.1", port=0, funasr_port=0, preload=False, limits=Limits(idle_timeout_s=5))


@contextlib.asynccontextmanager
async def running(config: ServerConfig = CONFIG):
    engine = Engine()
    app = App(engine, config)
    await app.start()
    try:
        yield app
    finally:
        await app.shutdown()
        assert not engine.loaded, "a request that should fail early loaded the models"


def _url(app: App, path: str = wire.STREAM_PATH, port_index: int = 0, scheme: str = "ws") -> str:
    return f"{scheme}://127.0.0.1:{app.ports[port_index]}{path}"


async def _exchange(url: str, *frames, **connect_args) -> tuple[list[dict], int | None]:
    """Sends `frames`, then reads until the server closes; returns the JSON messages and close code."""
    async with connect(url, **connect_args) as ws:
        for frame in frames:
            await ws.send(frame)
        messages = []
        with contextlib.suppress(ConnectionClosed):
            async for text in ws:
                messages.append(json.loads(text))
        return messages, ws.close_code


def _start(**fields) -> str:
    return json.dumps({"type": "start", "source": "en", "target": "de"} | fields)


async def _http(url: str) -> tuple[int, dict, bytes]:
    def get():
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    return await asyncio.to_thread(get)


# bad input, one client each -----------------------------------------------------------------------------

BAD_INPUT = [
    ("malformed JSON", ["{'type': 'start'"], ErrorCode.BAD_JSON, wire.CLOSE_POLICY_VIOLATION),
    ("audio before start", [b"\x00\x00" * 160], ErrorCode.NOT_STARTED, wire.CLOSE_POLICY_VIOLATION),
    ("stop before start", ['{"type": "stop"}'], ErrorCode.NOT_STARTED, wire.CLOSE_POLICY_VIOLATION),
    ("unknown language", [_start(source="klingon")], ErrorCode.UNSUPPORTED_LANGUAGE, wire.CLOSE_POLICY_VIOLATION),
    ("same languages", [_start(target="English")], ErrorCode.UNSUPPORTED_LANGUAGE, wire.CLOSE_POLICY_VIOLATION),
    (
        "unsupported sample rate",
        [_start(sample_rate_hz=7000)],
        ErrorCode.UNSUPPORTED_SAMPLE_RATE,
        wire.CLOSE_UNSUPPORTED_DATA,
    ),
    (
        "unsupported format",
        [_start(sample_format="mulaw")],
        ErrorCode.UNSUPPORTED_SAMPLE_FORMAT,
        wire.CLOSE_UNSUPPORTED_DATA,
    ),
    ("unknown mode", [_start(mode="telepathy")], ErrorCode.UNSUPPORTED_MODE, wire.CLOSE_POLICY_VIOLATION),
    ("policy for the cascade", [_start(mode="cascade", policy="wait-k")], ErrorCode.UNSUPPORTED_POLICY, 1008),
    ("unknown policy", [_start(policy="telepathy")], ErrorCode.UNSUPPORTED_POLICY, wire.CLOSE_POLICY_VIOLATION),
    ("knob for the cascade", [_start(mode="cascade", knob=5)], ErrorCode.BAD_OPTION, wire.CLOSE_POLICY_VIOLATION),
    ("knob out of range", [_start(mode="direct", policy="la", knob=1)], ErrorCode.BAD_OPTION, 1008),
    ("step out of range", [_start(step_ms=20)], ErrorCode.BAD_OPTION, wire.CLOSE_POLICY_VIOLATION),
    ("unknown field", [_start(rate=16000)], ErrorCode.BAD_MESSAGE, wire.CLOSE_POLICY_VIOLATION),
    ("newer protocol", [_start(version=2)], ErrorCode.UNSUPPORTED_VERSION, wire.CLOSE_POLICY_VIOLATION),
]


@pytest.mark.parametrize(("frames", "code", "close_code"), [b[1:] for b in BAD_INPUT], ids=[b[0] for b in BAD_INPUT])
def test_bad_input_gets_an_error_then_end_then_a_clean_close(frames, code, close_code):
    async def main():
        async with running() as app:
            return await _exchange(_url(app), *frames)

    messages, closed_with = asyncio.run(main())
    assert [m["type"] for m in messages] == ["error", "end"]
    error = wire.parse_server_message(json.dumps(messages[0]))
    assert error.code == code and error.fatal and len(error.message) > 20
    assert messages[1] == {"type": "end", "reason": "error", "audio_ms": 0, "n_segments": 0}
    assert closed_with == close_code


def test_a_frame_beyond_the_socket_limit_is_cut_off_with_1009():
    config = replace(CONFIG, limits=Limits(max_frame_bytes=8192))

    async def main():
        async with running(config) as app:
            return await _exchange(_url(app), b"\x00" * (config.limits.socket_max_size + 2))

    messages, closed_with = asyncio.run(main())
    assert closed_with == wire.CLOSE_MESSAGE_TOO_BIG


def test_a_silent_client_is_ended_by_the_idle_timeout():
    config = replace(CONFIG, limits=Limits(idle_timeout_s=0.5))

    async def main():
        async with running(config) as app:
            return await _exchange(_url(app))

    messages, closed_with = asyncio.run(main())
    assert messages[0]["code"] == "idle_timeout" and messages[-1]["type"] == "end"
    assert closed_with == wire.CLOSE_NORMAL


def test_one_bad_client_does_not_disturb_another_connection():
    async def main():
        async with running() as app, connect(_url(app)) as patient:
            bad = await _exchange(_url(app), "not json")
            await patient.send(_start(source="xx"))
            reply = json.loads(await patient.recv())
            return bad, reply

    (bad_messages, _), reply = asyncio.run(main())
    assert bad_messages[0]["code"] == "bad_json"
    assert reply["code"] == "unsupported_language"


# HTTP routes ---------------------------------------------------------------------------------------------


def test_http_routes():
    async def main():
        async with running() as app:
            base = _url(app, "", scheme="http")
            return {
                path: await _http(base + path)
                for path in (
                    "/", "/static/app.js", "/static/worklet.js", "/static/style.css", "/static/../app.py",
                    "/static/missing.js", "/healthz", "/readyz", "/v1/status", "/v1/languages", "/v1/stream",
                    "/nowhere",
                )
            }  # fmt: skip

    responses = asyncio.run(main())
    status = {path: r[0] for path, r in responses.items()}
    assert status == {
        "/": 200, "/static/app.js": 200, "/static/worklet.js": 200, "/static/style.css": 200, "/static/../app.py": 404,
        "/static/missing.js": 404, "/healthz": 200, "/readyz": 503, "/v1/status": 200, "/v1/languages": 200,
        "/v1/stream": 426, "/nowhere": 404,
    }  # fmt: skip
    page = responses["/"]
    assert page[1]["Content-Type"].startswith("text/html") and b"Start microphone" in page[2]
    assert responses["/static/app.js"][1]["Content-Type"].startswith("text/javascript")
    assert b"not loaded" in responses["/readyz"][2]
    status_body = json.loads(responses["/v1/status"][2])
    assert status_body["ready"] is False and status_body["sessions"] == 0
    assert status_body["modes"] == list(MODES) and status_body["default_mode"] == DEFAULT_MODE
    languages = json.loads(responses["/v1/languages"][2])
    assert {"code": "en", "name": "English"} in languages["sources"]
    assert len(languages["targets"]) > len(languages["sources"]) > 50


# access control and capacity -----------------------------------------------------------------------------


def test_token_is_required_by_header_or_query():
    config = replace(CONFIG, token="s3cret")

    async def main():
        async with running(config) as app:
            outcomes = {}
            for name, url, headers in (
                ("none", _url(app), None),
                ("wrong", _url(app, wire.STREAM_PATH + "?token=nope"), None),
                ("query", _url(app, wire.STREAM_PATH + "?token=s3cret"), None),
                ("header", _url(app), {"Authorization": "Bearer s3cret"}),
            ):
                try:
                    messages, _ = await _exchange(url, "{", additional_headers=headers)
                    outcomes[name] = messages[0]["code"]
                except InvalidStatus as e:
                    outcomes[name] = (e.response.status_code, json.loads(e.response.body)["code"])
            return outcomes

    assert asyncio.run(main()) == {
        "none": (401, "unauthorized"),
        "wrong": (401, "unauthorized"),
        "query": "bad_json",
        "header": "bad_json",
    }


def test_only_allowed_origins_may_connect():
    config = replace(CONFIG, allowed_origins=("https://captions.example",))

    async def main():
        async with running(config) as app:
            outcomes = {}
            same = f"http://127.0.0.1:{app.ports[0]}"
            for origin in ("https://evil.example", "https://captions.example", same):
                try:
                    messages, _ = await _exchange(_url(app), "{", origin=origin)
                    outcomes[origin] = messages[0]["code"]
                except InvalidStatus as e:
                    outcomes[origin] = e.response.status_code
            return outcomes, same

    outcomes, same = asyncio.run(main())
    assert outcomes == {"https://evil.example": 403, "https://captions.example": "bad_json", same: "bad_json"}


def test_sessions_beyond_the_maximum_are_refused_at_the_handshake_with_503():
    config = replace(CONFIG, limits=Limits(max_sessions=1))

    async def main():
        async with running(config) as app:
            async with connect(_url(app)):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(_url(app, "/funasr")):
                        pass
                status = (await _http(_url(app, "/v1/status", scheme="http")))[2]
            await asyncio.sleep(0.1)
            messages, _ = await _exchange(_url(app), "{")
            return refused.value.response, json.loads(status), messages

    response, status, messages = asyncio.run(main())
    assert response.status_code == 503
    body = json.loads(response.body)
    assert body["code"] == "server_busy" and "1 of 1 sessions" in body["message"]
    assert status["accepting"] is False and status["sessions"] == 1
    assert messages[0]["code"] == "bad_json", "the slot was not given back"


# FunASR endpoint, before any session -----------------------------------------------------------------------


def test_funasr_endpoint_negotiates_binary_and_reports_errors_in_its_shape():
    async def main():
        async with running() as app:
            results = {}
            for name, url in (("port", _url(app, "/", port_index=1)), ("path", _url(app, "/funasr"))):
                async with connect(url, subprotocols=["binary"]) as ws:
                    assert ws.subprotocol == "binary"
                    await ws.send(
                        json.dumps({"mode": "2pass", "wav_name": "demo", "is_speaking": True, "target_lang": "xx"})
                    )
                    results[name] = json.loads(await ws.recv())
            results["mode"], _ = await _exchange(_url(app, "/", port_index=1), json.dumps({"mode": "3pass"}))
            return results

    results = asyncio.run(main())
    for name in ("port", "path"):
        message = results[name]
        assert message["is_end"] is True and message["is_final"] is False and message["text"] == ""
        assert message["error_code"] == "unsupported_language" and message["wav_name"] == "demo"
        assert message["mode"] == "2pass-offline"
    assert results["mode"][0]["error_code"] == "unsupported_mode"


def test_native_path_on_the_funasr_port_and_unknown_paths():
    async def main():
        async with running() as app:
            native, _ = await _exchange(_url(app, wire.STREAM_PATH, port_index=1), "{")
            with pytest.raises(InvalidStatus) as missing:
                async with connect(_url(app, "/elsewhere")):
                    pass
            return native, missing.value.response.status_code

    native, status = asyncio.run(main())
    assert native[0]["code"] == "bad_json" and status == 404
