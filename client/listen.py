"""Following a room as a listener (`streamst-mic --listen ROOM --target fr`): no microphone.

    url = captions_url("http://host:8765/room/4f2a…?key=…", DEFAULT_SERVER, "fr")
    listener = RoomListener(url, writers)
    code = await listener.run(PlainDisplay(sys.stdout, sys.stderr, listener.snapshot))

The listener receives `joined`, the room's recent finals in its language, then live captions, until
the room ends (`end`). A dropped connection is opened again with backoff; the room then sends its
history again, and the finals already shown are skipped by their segment ids."""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Sequence
from urllib.parse import parse_qs, urlencode, urlsplit

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from streamst import wire
from streamst.client.connection import BACKOFF_JITTER, State, Status, open_connection, parse_message, stream_url
from streamst.client.display import Display, Snapshot
from streamst.client.errors import ClientError, ServerRefused, ServerUnreachable, StreamFailed
from streamst.client.save import CaptionWriter

log = logging.getLogger("streamst.client.listen")

ROOM_PAGE_PREFIX = "/room/"


def captions_url(room: str, server: str, target: str, key: str | None = None) -> str:
    """The WebSocket URL of a room's captions in `target`. `room` is the link a speaker shares
    (http(s)://host/room/ID?key=KEY) or a room id, then on `server` with `key`."""
    room = room.strip()
    if "://" in room:
        parts = urlsplit(room)
        if not parts.path.startswith(ROOM_PAGE_PREFIX) and not parts.path.startswith(wire.ROOMS_PATH + "/"):
            raise ClientError(f"{room!r} is not a room's link; it looks like http://HOST:PORT/room/ID?key=KEY")
        room_id = parts.path.rstrip("/").split("/")[2 if parts.path.startswith(ROOM_PAGE_PREFIX) else 3]
        key = key or parse_qs(parts.query).get("key", [None])[0]
        base = stream_url(f"{parts.scheme}://{parts.netloc}")
    else:
        room_id = room
        base = stream_url(server)
    if not room_id or "/" in room_id:
        raise ClientError(f"{room!r} names no room; give the room's link or its id")
    if not key:
        raise ClientError("reading a room needs its read key: give the whole link the speaker shares, or --key")
    scheme_and_host = base.removesuffix(urlsplit(base).path)
    return f"{scheme_and_host}{wire.captions_path(room_id)}?{urlencode({'target': target, 'key': key})}"


def viewer_link(stream: str, room_id: str, read_key: str) -> str:
    """The room's page for people, on the server a stream URL (ws:// or wss://) points at."""
    parts = urlsplit(stream)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}{wire.viewer_path(room_id)}?{urlencode({'key': read_key})}"


class RoomListener:
    """Shows and saves one room's captions in one language until the room ends."""

    def __init__(
        self,
        url: str,
        writers: Sequence[CaptionWriter] = (),
        cafile: str | None = None,
        max_reconnect_s: float = 300.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 8.0,
    ) -> None:
        self.url = url
        self.display: Display | None = None
        self.writers = tuple(writers)
        self.cafile = cafile
        self.max_reconnect_s = max_reconnect_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.status = Status(State.CONNECTING, urlsplit(url).netloc)
        self.languages = parse_qs(urlsplit(url).query).get("target", ["?"])[0]
        self.n_finals = 0
        self._last_segment_id = -1  # the last final shown: what a reconnection's history repeats

    def snapshot(self) -> Snapshot:
        return Snapshot(self.status, self.languages, -math.inf, 0.0, 0, listening=True)

    async def run(self, display: Display) -> int:
        """Reads until the room ends, showing on `display`; raises ClientError when the first
        connection is refused, and StreamFailed when the room fails or reconnecting gives up."""
        self.display = display
        ws = await open_connection(self.url, cafile=self.cafile)
        while True:
            ended = await self._read(ws)
            if ended:
                self._set(State.STOPPED)
                return 0
            ws = await self._reconnect()

    async def _read(self, ws: ClientConnection) -> bool:
        """One connection's messages; True when the room ended."""
        try:
            async for text in ws:
                message = parse_message(text)
                if isinstance(message, wire.Joined):
                    source = f"{message.source}→" if message.source else "waiting for the speaker · "
                    self.languages = f"room {message.room_id} · {source}{message.target}"
                    self._set(State.CONNECTED)
                elif isinstance(message, wire.Caption):
                    self._on_caption(message)
                elif isinstance(message, wire.Error) and message.fatal:
                    raise StreamFailed(f"the room ended this listener: {message.message} ({message.code})")
                elif isinstance(message, wire.End):
                    return True
        except ConnectionClosed:
            pass
        finally:
            await ws.close()
        return False

    def _on_caption(self, caption: wire.Caption) -> None:
        if caption.segment_id <= self._last_segment_id:
            return  # shown before the connection dropped
        if caption.type == "final":
            self._last_segment_id = caption.segment_id
            if caption.committed_text:
                self.n_finals += 1
        for writer in self.writers:
            writer.write(caption)
        if self.display is not None:
            self.display.on_caption(caption)

    async def _reconnect(self) -> ClientConnection:
        loop = asyncio.get_running_loop()
        lost_at_s = loop.time()
        attempt = 0
        reason = "the connection dropped"
        while True:
            attempt += 1
            delay_s = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
            delay_s *= 1.0 - BACKOFF_JITTER * random.random()
            if loop.time() + delay_s - lost_at_s > self.max_reconnect_s:
                raise StreamFailed(f"gave up reconnecting to the room after {self.max_reconnect_s:.0f} s ({reason})")
            self._set(State.RECONNECTING, detail=reason, attempt=attempt, retry_at_s=None)
            await asyncio.sleep(delay_s)
            try:
                return await open_connection(self.url, cafile=self.cafile)
            except ServerRefused as e:
                if not e.retryable:
                    raise StreamFailed(f"the room cannot be read any more: {e}") from e
                reason = str(e)
            except ServerUnreachable as e:
                reason = str(e)

    def _set(self, state: State, **fields) -> None:
        self.status = Status(state, self.status.server, **fields)
        if self.display is not None:
            self.display.on_status(self.status)
