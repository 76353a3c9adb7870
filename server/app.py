"""The service: one shared engine, one session per connection, HTTP routes, admission, shutdown.

    app = App(Engine(), ServerConfig(port=8765))
    await app.start()          # listens; loads the models in the background
    ...
    await app.shutdown()       # finishes open segments, sends their finals, closes

Routes on the main port: `/` (the page), `/static/*`, `/healthz`, `/readyz`, `/v1/status`,
`/v1/languages`; rooms: `POST /v1/rooms` (a new room and its keys), `GET /v1/rooms/{id}` (its
counters), `GET /v1/rooms/{id}/qr.svg?key=` (its link as a QR code), `/room/{id}` (the caption
viewer); WebSockets at `/v1/stream` (native protocol, also a room's speaker), `/v1/rooms/{id}/captions`
(a room's listeners) and `/` or `/funasr` (FunASR protocol). On the FunASR port every WebSocket path
speaks FunASR, except `/v1/stream`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import ssl
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.protocol import State

import streamst
from streamst import wire
from streamst.engine import Engine
from streamst.errors import LanguageError, StreamstError
from streamst.languages import Language, all_languages, resolve
from streamst.options import MODES
from streamst.server import access, policies, qr, web
from streamst.server.config import ServerConfig
from streamst.server.decoder_watch import DecoderWatch
from streamst.server.funasr import SUBPROTOCOL, FunasrConnection
from streamst.server.limits import Admission
from streamst.server.listener import ListenerConnection
from streamst.server.native import NativeConnection
from streamst.server.policies import SessionChoice
from streamst.server.room import Room
from streamst.server.rooms import Rooms
from streamst.server.scheduler import ModelScheduler
from streamst.wire import ErrorCode, ProtocolError

log = logging.getLogger("streamst.server")

NATIVE = "native"
FUNASR = "funasr"
FUNASR_PATHS = ("/", "/funasr")
SESSION_ID_CHARS = 12
ROOM_PATH_PARTS = 4  # "", "v1", "rooms", "{id}" (+ "captions" or "qr.svg")
STATUS_OF_CODE = {  # HTTP status of a refused room request, by error code
    ErrorCode.BAD_MESSAGE: 400,
    ErrorCode.UNSUPPORTED_LANGUAGE: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.UNKNOWN_ROOM: 404,
    ErrorCode.ROOM_FULL: 503,
    ErrorCode.SERVER_BUSY: 503,
    ErrorCode.SHUTTING_DOWN: 503,
}


@dataclass(frozen=True)
class ListenerTicket:
    """A listener's handshake was admitted: the room and language its connection will read."""

    room: Room
    target: Language


class App:
    def __init__(self, engine: Engine, config: ServerConfig = ServerConfig()) -> None:
        self.engine = engine
        self.config = config
        self.limits = config.limits
        self.scheduler = ModelScheduler(config.limits.model_concurrency)
        self.admission = Admission(config.limits.max_sessions, is_gone=_is_closed)
        self.shutdown_requested = asyncio.Event()
        self._servers: list[Server] = []
        self._endpoints: dict[ServerConnection, str | ListenerTicket] = {}
        self.rooms = Rooms(config.limits, self.scheduler, lambda: self.engine.load().final_translator, _is_closed)
        self._load_task: asyncio.Task[Any] | None = None
        self.decoder = DecoderWatch(lambda: self.engine.load().translator if self.engine.loaded else None)
        self._origins = access.origin_policy(config.host, (), False, config.public_origins, config.allowed_origins)

    # serving --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listens on the configured ports. Reachable from the network without a token (and without
        `no_token`), it first makes one up: `config.token` holds it from then on."""
        if self.config.generates_token:
            self.config = replace(self.config, token=access.new_token())
            log.info("%s is reachable from the network: clients must give the generated token", self.config.host)
        elif self.config.token is None and not self.config.loopback_only:
            log.warning("%s is reachable from the network and needs no token: anyone can connect", self.config.host)
        tls = self._tls_context()
        ports = [(self.config.port, "main")]
        if self.config.funasr_port is not None:
            ports.append((self.config.funasr_port, FUNASR))
        for port, kind in ports:
            server = await serve(
                self._handle,
                self.config.host,
                port,
                process_request=partial(self._process_request, port_kind=kind),
                select_subprotocol=_select_subprotocol,
                compression=None,
                max_size=self.limits.socket_max_size,
                max_queue=16,
                ping_interval=self.limits.ping_interval_s,
                ping_timeout=self.limits.ping_timeout_s,
                close_timeout=self.limits.close_timeout_s,
                server_header=f"streamst/{streamst.__version__}",
                ssl=tls,
            )
            self._servers.append(server)
            log.info(
                "listening on %s (%s)", self._url(server, tls), "page, native and FunASR" if kind == "main" else kind
            )
        bound_ports = {sock.getsockname()[1] for server in self._servers for sock in server.sockets}
        self._origins = access.origin_policy(
            self.config.host, bound_ports, tls is not None, self.config.public_origins, self.config.allowed_origins
        )
        if self.config.preload:
            self._start_loading()
        if self.engine.config.remote_translator:
            self.decoder.start()

    @property
    def ports(self) -> list[int]:
        """The bound ports: main first, then FunASR's (useful when asked for port 0)."""
        return [server.sockets[0].getsockname()[1] for server in self._servers]

    async def shutdown(self) -> None:
        """Lets the open sessions finish their segments and send their finals (within
        `shutdown_grace_s`) while still listening, so that new WebSockets get 503 `shutting_down`
        and /readyz 503 rather than a refused connection; then stops listening."""
        if self.shutdown_requested.is_set() and not self._servers:
            return
        log.info("shutting down: finishing %d open session(s)", self.admission.n_active)
        self.shutdown_requested.set()
        self.rooms.end_waiting()
        await self._wait_for_connections()
        for server in self._servers:
            server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.limits.close_timeout_s):
                await asyncio.gather(*(server.wait_closed() for server in self._servers))
        self._servers.clear()
        await self.decoder.stop()
        self.scheduler.shutdown()
        log.info("stopped")

    async def _wait_for_connections(self) -> None:
        """Waits for the connections open now (sessions, and handshakes that may become sessions) to
        end; cancels those left after the grace period. Later ones are refused, not waited for."""
        tasks = {task for server in self._servers for task in server.handler_tasks}
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.config.shutdown_grace_s)
        if pending:
            log.warning(
                "%d connection(s) still open after %.0f s; closing them", len(pending), self.config.shutdown_grace_s
            )
            for task in pending:
                task.cancel()

    # models ---------------------------------------------------------------------------------------

    def check_languages(self, source: str, target: str) -> tuple[Language, Language]:
        try:
            return Engine.check_pair(source, target)
        except LanguageError as e:
            raise ProtocolError(ErrorCode.UNSUPPORTED_LANGUAGE, str(e)) from e

    async def open_session(self, source: str, target: str, choice: SessionChoice):
        """A new engine session, once the models are loaded. Opening one runs no model, so it does
        not queue behind other streams' model calls (the caller's receive loop must not stall)."""
        return await self._open(lambda: self.engine.session(source, target, mode=choice.mode, options=choice.options))

    async def open_source_session(self, source: str, choice: SessionChoice):
        """A room's source side (`SourceSession`): heard once, translated per language by the room."""
        return await self._open(lambda: self.engine.source_session(source, options=choice.options))

    async def _open(self, make: Callable[[], Any]) -> Any:
        """`make()` once the models are loaded, its errors as protocol errors."""
        await self._wait_loaded()
        try:
            return make()
        except LanguageError as e:
            raise ProtocolError(ErrorCode.UNSUPPORTED_LANGUAGE, str(e)) from e
        except StreamstError as e:
            raise ProtocolError(ErrorCode.ENGINE_ERROR, str(e)) from e

    def _start_loading(self) -> asyncio.Task[Any]:
        if self._load_task is None or (self._load_task.done() and self._load_task.exception() is not None):
            self._load_task = asyncio.create_task(asyncio.to_thread(self.engine.load), name="load-models")
            self._load_task.add_done_callback(_log_load)
        return self._load_task

    async def _wait_loaded(self) -> None:
        if self.engine.loaded:
            return
        try:
            await asyncio.shield(self._start_loading())
        except StreamstError as e:
            raise ProtocolError(ErrorCode.ENGINE_ERROR, f"the server cannot load its models: {e}") from e

    # HTTP and admission ---------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request, port_kind: str) -> Response | None:
        url = urlsplit(request.path)
        duplicate = web.duplicate_header(request)
        if duplicate is not None:
            log.info("refused %s %s: more than one %s header", _peer(connection), url.path, duplicate)
            return web.text_response(400, f"the request has more than one {duplicate} header; send it once\n")
        query = parse_qs(url.query)
        if not web.is_websocket_upgrade(request):
            if url.path.startswith(wire.ROOMS_PATH) or url.path.startswith("/room/"):
                return self._room_route(connection, request, url.path, query)
            return self._http_route(url.path)
        if _room_part(url.path) == "captions":
            return self._admit_listener(connection, request, url.path, query)
        endpoint = _endpoint(url.path, port_kind)
        if endpoint is None:
            return web.text_response(404, f"no WebSocket endpoint at {url.path}; use {wire.STREAM_PATH} or /funasr\n")
        refusal = self._check_access(connection, request, query) or self._admit(connection)
        if refusal is not None:
            log.info("refused %s %s: %s", _peer(connection), url.path, refusal.body.decode("utf-8", "replace"))
            return refusal
        self._endpoints[connection] = endpoint
        return None

    def _http_route(self, path: str) -> Response:
        if path in ("/", "/index.html"):
            return web.index_page()
        if path.startswith("/static/"):
            return web.static_file(path.removeprefix("/static/"))
        if path == "/healthz":
            return web.text_response(200, "ok\n")
        if path == "/readyz":
            return self._readiness()
        if path == "/v1/status":
            return web.json_response(200, self.status())
        if path == "/v1/languages":
            return web.json_response(200, _languages())
        if path == wire.STREAM_PATH:
            return web.text_response(
                426, f"{wire.STREAM_PATH} is a WebSocket endpoint; connect with a WebSocket client\n"
            )
        return web.text_response(404, f"not found: {path}\n")

    # rooms ----------------------------------------------------------------------------------------

    def _room_route(
        self, connection: ServerConnection, request: Request, path: str, query: dict[str, list[str]]
    ) -> Response:
        """POST /v1/rooms, GET /v1/rooms/{id}, GET /v1/rooms/{id}/qr.svg, GET /room/{id}."""
        try:
            if path.startswith("/room/"):
                return web.room_page()
            if path.rstrip("/") == wire.ROOMS_PATH:
                if request.method != "POST":
                    return web.text_response(405, f"{wire.ROOMS_PATH} takes POST: it creates a room\n")
                return self._create_room(connection, request, query)
            part = _room_part(path)
            if part == "":
                return web.text_response(404, f"not found: {path}\n")
            room = self.rooms.get(path.split("/")[3])
            if part is None:
                return web.json_response(200, room.describe())
            if part == "qr.svg":
                return self._room_qr(room, request, query)
            if part == "captions":
                return web.text_response(426, f"{path} is a WebSocket endpoint; connect with a WebSocket client\n")
            return web.text_response(404, f"not found: {path}\n")
        except ProtocolError as e:
            return web.error_response(STATUS_OF_CODE.get(e.code, 400), e.code, str(e))

    def _create_room(
        self, connection: ServerConnection, request: Request, query: dict[str, list[str]]
    ) -> Response:
        refusal = self._check_access(connection, request, query)
        if refusal is not None:
            return refusal
        if self.shutdown_requested.is_set():
            return web.error_response(503, ErrorCode.SHUTTING_DOWN, "the server is shutting down; try again later")
        room = self.rooms.create()
        body = {
            "room_id": room.id,
            "speak_key": room.keys.speak,
            "read_key": room.keys.read,
            "speak_path": wire.STREAM_PATH,
            "captions_path": wire.captions_path(room.id),
            "viewer_path": wire.viewer_path(room.id),
            "wait_s": self.limits.room_wait_s,
        }
        return web.json_response(201, body)

    def _room_qr(self, room: Room, request: Request, query: dict[str, list[str]]) -> Response:
        """The viewer link as a QR code, for the speaker's page: the key in the request must read the
        room; the link is on the first public origin, else on the host the request was sent to."""
        room = self.rooms.for_reader(room.id, query.get("key", [""])[0])
        if self.config.public_origins:
            base = self.config.public_origins[0].rstrip("/")
        else:
            scheme = "https" if self.config.certfile else "http"
            base = f"{scheme}://{request.headers.get('Host', f'127.0.0.1:{self.ports[0]}')}"
        link = f"{base}{wire.viewer_path(room.id)}?key={room.keys.read}"
        image = qr.svg(link)
        if image is None:
            return web.text_response(404, "QR codes need the segno package on the server: pip install segno\n")
        return web.response(200, image, web.CONTENT_TYPES[".svg"])

    def _admit_listener(
        self, connection: ServerConnection, request: Request, path: str, query: dict[str, list[str]]
    ) -> Response | None:
        """A listener's handshake: the room's read key stands in for the server's token; the room
        must exist, the language must be one it can add, and the room must have a free place."""
        self._forget_closed()
        refusal = self._check_origin(connection, request)
        if refusal is not None:
            return refusal
        try:
            if self.shutdown_requested.is_set():
                raise ProtocolError(ErrorCode.SHUTTING_DOWN, "the server is shutting down; try again later")
            room = self.rooms.for_reader(path.split("/")[3], query.get("key", [""])[0])
            target = _listener_target(query)
            room.check_language(target)
        except ProtocolError as e:
            log.info("refused %s %s: %s", _peer(connection), path, e)
            return web.error_response(STATUS_OF_CODE.get(e.code, 400), e.code, str(e))
        if not room.listeners.admit(connection):
            message = (
                f"room {room.id} has {self.limits.max_listeners_per_room} of {self.limits.max_listeners_per_room} "
                "listeners, its limit; try again later"
            )
            log.info("refused %s %s: %s", _peer(connection), path, message)
            return web.error_response(503, ErrorCode.ROOM_FULL, message)
        self._endpoints[connection] = ListenerTicket(room, target)
        return None

    def _readiness(self) -> Response:
        """200 while a new session would be admitted: models loaded, not shutting down, a session
        slot free, the models not saturated and a remote decoder answering; else 503 with the reason, so that a balancer's health
        check sends new sessions to another replica (open sessions carry on)."""
        if self.shutdown_requested.is_set():
            return web.text_response(503, "not ready: shutting down (open sessions are finishing)\n")
        if not self.engine.loaded:
            return web.text_response(503, f"not ready: {self._load_state()}\n")
        n_active = self.admission.n_active
        if n_active >= self.limits.max_sessions:
            return web.text_response(503, f"not ready: full ({n_active} of {self.limits.max_sessions} sessions)\n")
        if self.saturated:
            return web.text_response(503, "not ready: busy (the models are saturated and streams are waiting)\n")
        if self.decoder.problem is not None:
            return web.text_response(503, f"not ready: {self.decoder.problem}\n")
        return web.text_response(200, "ready\n")

    def status(self) -> dict[str, Any]:
        n_active = self.admission.n_active
        return {
            "version": wire.PROTOCOL_VERSION,
            "ready": self.engine.loaded,
            "models": self._load_state(),
            "sessions": n_active,
            "max_sessions": self.limits.max_sessions,
            "accepting": not self.shutdown_requested.is_set() and n_active < self.limits.max_sessions
            and not self.saturated and self.decoder.problem is None,
            "decoder_problem": self.decoder.problem,
            "utilisation": round(self.scheduler.utilisation(), 3),
            "shutting_down": self.shutdown_requested.is_set(),
            "token_required": self.config.token is not None,
            "modes": list(MODES),
            "default_mode": self.config.default_mode,
            "policies": policies.describe(),
            "rooms": self.rooms.status(),
        }

    def _load_state(self) -> str:
        if self.engine.loaded:
            return "loaded"
        if self.shutdown_requested.is_set():
            return "shutting down"
        task = self._load_task
        if task is None:
            return "not loaded (they load with the first session)"
        if task.done() and task.exception() is not None:
            return f"failed to load: {task.exception()}"
        return "loading"

    def _check_access(
        self, connection: ServerConnection, request: Request, query: dict[str, list[str]]
    ) -> Response | None:
        if self.config.token is not None and not _token_matches(request, query, self.config.token):
            return web.error_response(
                401,
                ErrorCode.UNAUTHORIZED,
                "this server needs a token: send 'Authorization: Bearer <token>' or add ?token=<token> to the URL",
            )
        return self._check_origin(connection, request)

    def _check_origin(self, connection: ServerConnection, request: Request) -> Response | None:
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin, connection):
            return web.error_response(
                403,
                ErrorCode.FORBIDDEN_ORIGIN,
                f"pages from {origin} may not connect (this server's own pages are {self._origins.describe_own()}); "
                f"the operator can add it with --public-origin {origin} if this server is reached there, "
                f"or allow another site's page with --allow-origin {origin}",
            )
        return None

    def _origin_allowed(self, origin: str, connection: ServerConnection) -> bool:
        """Against the allow-list and the server's own origins only, never the request's `Host`
        (a DNS-rebinding page sends its own name there); see `access`."""
        return self._origins.allows(origin, connection.local_address)

    def _admit(self, connection: ServerConnection) -> Response | None:
        self._forget_closed()
        if self.shutdown_requested.is_set():
            return web.error_response(503, ErrorCode.SHUTTING_DOWN, "the server is shutting down; try again later")
        if self.saturated:
            message = (
                f"the server cannot take another stream now: its models were busy "
                f"{self.scheduler.utilisation():.0%} of the last seconds and streams are waiting; try again later"
            )
            return web.error_response(503, ErrorCode.SERVER_BUSY, message)
        if self.decoder.problem is not None:
            message = f"the server cannot translate now: {self.decoder.problem}; try again later"
            return web.error_response(503, ErrorCode.ENGINE_ERROR, message)
        if not self.admission.admit(connection):
            message = (
                f"the server is full: {self.limits.max_sessions} of {self.limits.max_sessions} sessions in use; "
                "try again later"
            )
            return web.error_response(503, ErrorCode.SERVER_BUSY, message)
        return None

    @property
    def saturated(self) -> bool:
        """The running streams already use the models to the limit: a new one would slow them all."""
        return self.scheduler.n_waiting > 0 and self.scheduler.utilisation() >= self.limits.max_utilisation

    def _forget_closed(self) -> None:
        for connection in [c for c in self._endpoints if _is_closed(c)]:
            del self._endpoints[connection]

    # connections ----------------------------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        endpoint = self._endpoints.pop(connection, NATIVE)
        session_id = uuid.uuid4().hex[:SESSION_ID_CHARS]
        if isinstance(endpoint, ListenerTicket):
            try:
                await ListenerConnection(connection, self, session_id, endpoint.room, endpoint.target).run()
            finally:
                endpoint.room.listeners.release(connection)
            return
        handler = NativeConnection if endpoint == NATIVE else FunasrConnection
        try:
            await handler(connection, self, session_id).run()
        finally:
            self.admission.release(connection)

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.config.certfile is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.config.certfile, self.config.keyfile)
        return context

    def _url(self, server: Server, tls: ssl.SSLContext | None) -> str:
        host, port = server.sockets[0].getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if tls else 'http'}://{host}:{port}/"


def _endpoint(path: str, port_kind: str) -> str | None:
    if path == wire.STREAM_PATH:
        return NATIVE
    if port_kind == FUNASR or path in FUNASR_PATHS:
        return FUNASR
    return None


def _room_part(path: str) -> str | None:
    """What a path under /v1/rooms/{id} names: None for the room itself, else the part after the id
    ("captions", "qr.svg"); "" for paths that are not under a room."""
    parts = path.rstrip("/").split("/")
    if len(parts) < ROOM_PATH_PARTS or "/".join(parts[:3]) != wire.ROOMS_PATH:
        return ""
    return None if len(parts) == ROOM_PATH_PARTS else "/".join(parts[ROOM_PATH_PARTS:])


def _listener_target(query: dict[str, list[str]]) -> Language:
    code = query.get("target", [""])[0].strip()
    if not code:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, "a listener names its caption language: add ?target=de (or zh, es, …)"
        )
    try:
        return resolve(code)
    except LanguageError as e:
        raise ProtocolError(ErrorCode.UNSUPPORTED_LANGUAGE, str(e)) from e


def _select_subprotocol(connection: ServerConnection, offered: Sequence[str]) -> str | None:
    """FunASR's clients offer `binary`; others may offer nothing (or something we ignore)."""
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


def _token_matches(request: Request, query: dict[str, list[str]], token: str) -> bool:
    given = query.get("token", [""])[0]
    authorization = request.headers.get("Authorization", "")
    if authorization.lower().startswith("bearer "):
        given = authorization[len("bearer ") :].strip()
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def _is_closed(connection: Any) -> bool:
    return getattr(connection, "state", None) is State.CLOSED


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


@functools.lru_cache(maxsize=1)
def _languages() -> dict[str, Any]:
    languages = sorted(all_languages(), key=lambda lang: lang.name)
    return {
        "sources": [{"code": lang.code, "name": lang.name} for lang in languages if lang.whisper_code],
        "targets": [{"code": lang.code, "name": lang.name} for lang in languages],
    }


def _log_load(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    if task.exception() is not None:
        log.error("cannot load the models: %s", task.exception())
    else:
        log.info("models loaded")
