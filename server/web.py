"""Plain HTTP responses served beside the WebSockets: the browser page, health, status, languages."""

from __future__ import annotations

import email.utils
import functools
import http
import json
from pathlib import Path
from typing import Any

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from streamst import wire

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX_FILE = "index.html"
ROOM_FILE = "room.html"  # a room's caption viewer
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".ico": "image/x-icon",
}
SINGLE_HEADERS = ("Host", "Upgrade", "Origin", "Authorization")  # headers the server reads: once each
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
)


def response(status: int, body: bytes, content_type: str) -> Response:
    status_value = http.HTTPStatus(status)
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            *SECURITY_HEADERS,
        ]
    )
    return Response(status_value.value, status_value.phrase, headers, body)


def text_response(status: int, text: str) -> Response:
    return response(status, text.encode("utf-8"), "text/plain; charset=utf-8")


def json_response(status: int, data: Any) -> Response:
    return response(status, json.dumps(data, ensure_ascii=False).encode("utf-8"), "application/json")


def error_response(status: int, code: wire.ErrorCode, message: str) -> Response:
    """A refused handshake: the status, and the native protocol's `error` message as the body."""
    body = wire.encode(wire.Error(code=code, message=message)).encode("utf-8")
    return response(status, body, "application/json")


def static_file(name: str) -> Response:
    """A file of the page; only names directly inside the static folder are served."""
    body = _static_bytes(name)
    if body is None:
        return text_response(404, f"not found: /static/{name}\n")
    return response(200, body, CONTENT_TYPES[Path(name).suffix])


@functools.lru_cache(maxsize=32)
def _static_bytes(name: str) -> bytes | None:
    """The file's bytes, read once (the event loop never waits on the disk twice); None if not served."""
    path = STATIC_DIR / name
    unsafe = not name or "/" in name or "\\" in name or name.startswith(".")
    if unsafe or path.suffix not in CONTENT_TYPES or not path.is_file():
        return None
    return path.read_bytes()


def index_page() -> Response:
    return static_file(INDEX_FILE)


def room_page() -> Response:
    """The caption viewer; the same page for every room (it reads the room id from its URL)."""
    return static_file(ROOM_FILE)


def is_websocket_upgrade(request: Request) -> bool:
    upgrade = request.headers.get("Upgrade", "")
    return "websocket" in upgrade.lower()


def duplicate_header(request: Request) -> str | None:
    """The first header the server reads that the request sends more than once (which one would
    count is ambiguous, so such a request is refused); None when each comes at most once."""
    for name in SINGLE_HEADERS:
        if len(request.headers.get_all(name)) > 1:
            return name
    return None
