"""The server against hostile or odd requests: origins (DNS rebinding), tokens beyond loopback, JSON
of any shape, duplicate headers, and connections that arrive during a graceful shutdown.

Loopback only, models never loaded: everything here is decided before an engine session exists.
Each test waits on events, not on guessed durations, and is bounded by TEST_TIMEOUT_S."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamst import wire
from streamst.engine import Engine
from streamst.errors import OptionsError
from streamst.server import access, cli
from streamst.server import funasr_messages as funasr
from streamst.server.app import App
from streamst.server.config import ServerConfig
from streamst.server.limits import Limits
from streamst.wire import ErrorCode, ProtocolError

TEST_TIMEOUT_S = 60
CONFIG = ServerConfig(host="127.0.0.1", port=0, funasr_port=0, preload=False, limits=Limits(idle_timeout_s=30))


@contextlib.asynccontextmanager
async def running(config: ServerConfig = CONFIG):
    engine = Engine()
    app = App(engine, config)
    await app.start()
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            yield app
    finally:
        await app.shutdown()
        assert not engine.loaded, "a request that should fail early loaded the models"


def _url(app: App, path: str = wire.STREAM_PATH, port_index: int = 0) -> str:
    return f"ws://127.0.0.1:{app.ports[port_index]}{path}"


async def _raw(port: int, path: str, headers: list[tuple[str, str]], upgrade: bool = True) -> tuple[int, bytes]:
    """Sends one HTTP request with exactly these headers (duplicates and a forged Host included);
    returns the status and, for a refusal, the body."""
    lines = [f"GET {path} HTTP/1.1"]
    if upgrade:
        headers = [
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
            *headers,
        ]
    lines += [f"{name}: {value}" for name, value in headers]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
        length = int(lengths[0]) if lengths else 0
        body = await reader.readexactly(length) if status != 101 else b""
        return status, body
    finally:
        writer.close()


def _upgrade_headers(port: int, origin: str | None = None, host: str | None = None) -> list[tuple[str, str]]:
    headers = [("Host", host or f"127.0.0.1:{port}"), ("Upgrade", "websocket")]
    return headers + ([("Origin", origin)] if origin is not None else [])


# 1. origins ------------------------------------------------------------------------------------------


def test_a_forged_host_header_does_not_make_a_foreign_page_same_origin():
    config = replace(CONFIG, allowed_origins=("https://good.example",))

    async def main():
        async with running(config) as app:
            port = app.ports[0]
            rebinding = _upgrade_headers(port, f"http://evil.example:{port}", host=f"evil.example:{port}")
            outcomes = {"rebinding": await _raw(port, wire.STREAM_PATH, rebinding)}
            own = [f"http://{host}:{port}" for host in ("localhost", "127.0.0.1", "[::1]")]
            for origin in ("https://good.example", *own):
                outcomes[origin] = await _raw(port, wire.STREAM_PATH, _upgrade_headers(port, origin))
            outcomes["no origin"] = await _raw(port, wire.STREAM_PATH, _upgrade_headers(port))
            outcomes["other port"] = await _raw(port, wire.STREAM_PATH, _upgrade_headers(port, "http://localhost:1"))
            return outcomes

    outcomes = asyncio.run(main())
    status, body = outcomes.pop("rebinding")
    assert status == 403 and json.loads(body)["code"] == "forbidden_origin"
    assert "--public-origin" in json.loads(body)["message"]
    assert outcomes.pop("other port")[0] == 403
    assert {name: status for name, (status, _) in outcomes.items()} == dict.fromkeys(outcomes, 101)


def test_without_an_allow_list_a_loopback_server_takes_any_page_unless_it_has_public_origins():
    async def main():
        outcomes = {}
        for name, config in (("plain", CONFIG), ("public", replace(CONFIG, public_origins=("https://cc.example",)))):
            async with running(config) as app:
                port = app.ports[0]
                for origin in (f"http://evil.example:{port}", "https://cc.example", f"http://localhost:{port}"):
                    status, _ = await _raw(port, "/funasr", _upgrade_headers(port, origin))
                    outcomes[name, origin.split(":")[1]] = status
        return outcomes

    assert asyncio.run(main()) == {
        ("plain", "//evil.example"): 101,
        ("plain", "//cc.example"): 101,
        ("plain", "//localhost"): 101,
        ("public", "//evil.example"): 403,
        ("public", "//cc.example"): 101,
        ("public", "//localhost"): 101,
    }


def test_beyond_loopback_without_an_allow_list_only_the_servers_own_pages_may_connect():
    policy = access.origin_policy("0.0.0.0", {8765}, False, (), ())
    lan = ("192.168.1.20", 8765)
    assert not policy.any_origin
    assert policy.allows("http://192.168.1.20:8765", lan), "the page opened on the address the socket reached"
    assert policy.allows("http://192.168.1.20:8765", ("::ffff:192.168.1.20", 8765, 0, 0))
    assert policy.allows("http://LOCALHOST:8765") and policy.allows("http://[::1]:8765")
    assert not policy.allows("http://evil.example:8765", lan), "a rebound name is never the server's own"
    assert not policy.allows("http://192.168.1.20:9999", lan) and not policy.allows("null", lan)
    assert not policy.allows("https://192.168.1.20:8765", lan), "this server does not speak TLS"
    named = access.origin_policy("captions.lan", {80}, True, ("https://cc.example/",), ("null",))
    assert named.allows("http://captions.lan") and named.allows("https://cc.example:443") and named.allows("null")
    assert not named.allows("https://captions.lan.evil.example")


def test_origin_and_host_helpers():
    assert [access.is_loopback_host(h) for h in ("localhost", "127.0.0.9", "::1", "[::1]", "LocalHost.")] == [True] * 5
    assert not any(access.is_loopback_host(h) for h in ("0.0.0.0", "::", "", "10.0.0.1", "localhost.example"))
    assert access.origin_key("HTTPS://Example.ORG:443/") == ("https", "example.org", 443)
    assert access.origin_key("http://[::1]") == ("http", "::1", 80)
    assert all(access.origin_key(o) is None for o in ("null", "ftp://x", "http://x/path", "http://x:99999", "x"))
    with pytest.raises(OptionsError, match="scheme://host"):
        ServerConfig(public_origins=("captions.example.org",))


# 2. tokens beyond loopback ------------------------------------------------------------------------------


def test_a_token_is_generated_only_beyond_loopback_and_never_with_no_token():
    assert ServerConfig(host="0.0.0.0").generates_token and ServerConfig(host="::").generates_token
    assert ServerConfig(host="192.168.1.20").generates_token
    assert not any(ServerConfig(host=h).generates_token for h in ("127.0.0.1", "127.1.2.3", "::1", "localhost"))
    assert not ServerConfig(host="0.0.0.0", token="s3cret").generates_token
    assert not ServerConfig(host="0.0.0.0", no_token=True).generates_token
    with pytest.raises(OptionsError, match="contradict"):
        ServerConfig(token="s3cret", no_token=True)
    args = cli.build_parser().parse_args(["--host", "0.0.0.0", "--no-token", "--public-origin", "https://cc.example"])
    config = cli.config_from_args(args)
    assert config.no_token and config.public_origins == ("https://cc.example",) and not config.generates_token


def test_a_server_reachable_from_the_network_requires_the_token_it_generated(monkeypatch, capsys):
    # Tests listen on loopback only: this one pretends 127.0.0.1 were a network address.
    monkeypatch.setattr(ServerConfig, "loopback_only", property(lambda config: False))

    async def main():
        async with running() as app:
            token = app.config.token
            with pytest.raises(InvalidStatus) as refused:
                async with connect(_url(app)):
                    pass
            async with connect(_url(app, f"{wire.STREAM_PATH}?token={token}")) as ws:
                await ws.send("{")
                reply = json.loads(await ws.recv())
            cli.announce_token(app)
            return token, refused.value.response.status_code, reply, app.status()["token_required"]

    token, refused, reply, required = asyncio.run(main())
    assert len(token) >= 32 and refused == 401 and reply["code"] == "bad_json" and required
    printed = capsys.readouterr().err
    assert f"http://127.0.0.1:" in printed and f"/?token={token}" in printed and printed.count(token) == 3


def test_the_page_url_names_the_public_origin_or_a_reachable_address():
    class Running:
        config = ServerConfig(host="0.0.0.0", token="t0k", public_origins=("https://cc.example/",))
        ports = [8765]

    assert cli.page_url(Running()) == "https://cc.example/?token=t0k"
    Running.config = ServerConfig(host="::", token="t0k")
    url = cli.page_url(Running())
    assert url.startswith("http://") and url.endswith(":8765/?token=t0k") and "://:" not in url and "[::]" not in url


# 3. JSON of any shape ---------------------------------------------------------------------------------

HUGE_NUMBER = '{"type":"start","source":"en","target":"de","knob":1' + "0" * 5000 + "}"
BAD_JSON = [
    ("a number of 5000 digits", HUGE_NUMBER, "5001 digits"),
    ("a number no float holds", '{"type":"start","source":"en","target":"de","knob":1' + "0" * 400 + "}", "digits"),
    ("arrays nested 100000 deep", "[" * 100_000, "too deeply"),
    ("objects nested 100000 deep", '{"a":' * 100_000, "too deeply"),
    ("a lone surrogate", '{"type":"start","source":"\\ud800","target":"de"}', "surrogate"),
    ("not JSON", "{'type': 'start'", "not valid JSON"),
]


@pytest.mark.parametrize(("text", "says"), [b[1:] for b in BAD_JSON], ids=[b[0] for b in BAD_JSON])
def test_unreadable_json_is_bad_json_on_both_endpoints(text, says):
    async def exchange(url: str) -> tuple[list[dict], int | None]:
        async with connect(url) as ws:
            await ws.send(text)
            messages = []
            with contextlib.suppress(ConnectionClosed):
                async for frame in ws:
                    messages.append(json.loads(frame))
            return messages, ws.close_code

    async def main():
        async with running() as app:
            return await exchange(_url(app)), await exchange(_url(app, "/", port_index=1))

    (native, native_close), (funasr_messages, funasr_close) = asyncio.run(main())
    assert [m["type"] for m in native] == ["error", "end"]
    assert native[0]["code"] == "bad_json" and says in native[0]["message"]
    assert funasr_messages[-1]["error_code"] == "bad_json" and says in funasr_messages[-1]["error"]
    assert native_close == funasr_close == wire.close_code(ErrorCode.BAD_JSON) == wire.CLOSE_POLICY_VIOLATION


def test_parsers_accept_what_json_allows_and_refuse_the_rest_with_bad_json():
    ok = '{"type":"start","source":"\\ud83d\\ude00","target":"de","knob":' + "9" * wire.MAX_JSON_DIGITS + "}"
    assert wire.parse_json(ok)["source"] == "\U0001f600"
    assert funasr.parse_json('{"chunk_size": [5, 10, 5], "audio_fs": -16000}')["chunk_size"] == [5, 10, 5]
    for parse in (wire.parse_client_message, wire.parse_server_message, funasr.parse_json):
        for _, text, says in BAD_JSON:
            with pytest.raises(ProtocolError, match=says) as refused:
                parse(text)
            assert refused.value.code == ErrorCode.BAD_JSON
    with pytest.raises(ProtocolError, match="surrogate"):
        wire.parse_json(b'{"source": "\xed\xa0\x80"}')


# 4. duplicate headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["Origin", "Host", "Upgrade", "Authorization"])
def test_a_duplicate_header_gets_400_naming_it(header):
    async def main():
        async with running() as app:
            port = app.ports[0]
            headers = _upgrade_headers(port, f"http://localhost:{port}") + [("Authorization", "Bearer x")]
            value = next(v for name, v in headers if name == header)
            upgrade = await _raw(port, wire.STREAM_PATH, [*headers, (header, value)])
            plain_headers = [("Host", f"127.0.0.1:{port}"), (header, value), (header, value)]
            plain = await _raw(port, "/healthz", plain_headers, upgrade=False)
            after = await _raw(port, wire.STREAM_PATH, _upgrade_headers(port))
            return upgrade, plain, after

    (status, body), (plain_status, plain_body), (after_status, _) = asyncio.run(main())
    assert status == 400 and f"more than one {header} header" in body.decode()
    assert plain_status == 400 and header in plain_body.decode()
    assert after_status == 101, "the server stopped serving after a bad request"


# 5. shutdown ------------------------------------------------------------------------------------------


def test_during_shutdown_new_connections_get_503_until_the_open_sessions_end():
    # The open session cannot end while its client does not read: the server's close frame waits
    # unanswered (close_timeout_s is long), so the shutdown stays in its grace period until we let it.
    config = replace(CONFIG, limits=Limits(idle_timeout_s=60, close_timeout_s=60), shutdown_grace_s=60)

    async def refusal(url: str) -> tuple[int, str]:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        response = refused.value.response
        return response.status_code, json.loads(response.body)["code"]

    async def main():
        app = App(Engine(), config)
        await app.start()
        async with asyncio.timeout(TEST_TIMEOUT_S):
            port, funasr_port = app.ports
            session = await connect(_url(app))
            session.transport.pause_reading()
            shutting_down = asyncio.create_task(app.shutdown())
            await app.shutdown_requested.wait()
            native = await refusal(_url(app))
            on_funasr_port = await refusal(_url(app, "/", port_index=1))
            readyz = await _raw(port, "/readyz", [("Host", f"127.0.0.1:{port}")], upgrade=False)
            still_waiting = not shutting_down.done()
            session.transport.resume_reading()
            messages = [json.loads(frame) async for frame in session]
            await shutting_down
            refused_after = []
            for listening_port in (port, funasr_port):
                with pytest.raises(OSError):
                    await asyncio.open_connection("127.0.0.1", listening_port)
                refused_after.append(listening_port)
            return native, on_funasr_port, readyz, still_waiting, messages, session.close_code, refused_after

    native, on_funasr_port, readyz, still_waiting, messages, close_code, refused_after = asyncio.run(main())
    assert native == on_funasr_port == (503, "shutting_down")
    assert readyz[0] == 503 and b"shutting down" in readyz[1]
    assert still_waiting, "the shutdown did not wait for the open session"
    assert messages[-1]["type"] == "end" and messages[-1]["reason"] == "shutdown"
    assert close_code == wire.CLOSE_GOING_AWAY
    assert len(refused_after) == 2, "the listeners stayed open after the shutdown"
