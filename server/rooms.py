"""The server's rooms: made (by POST /v1/rooms or a speaker's `start` with room "new"), found by id
with a key, counted against `max_rooms`, and forgotten when they end. See `room` for one room."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any

from streamst.server import access
from streamst.server.limits import Limits
from streamst.server.room import WAITING, Room, RoomKeys
from streamst.server.scheduler import ModelScheduler
from streamst.translators.base import Translator
from streamst.wire import ErrorCode, ProtocolError

log = logging.getLogger("streamst.server.rooms")

ROOM_ID_BYTES = 6  # a room id: 6 random bytes, 12 hex characters (the keys are what protect a room)


class Rooms:
    def __init__(
        self,
        limits: Limits,
        scheduler: ModelScheduler,
        translator: Callable[[], Translator],
        is_gone: Callable[[Any], bool],
    ) -> None:
        self.limits = limits
        self._scheduler = scheduler
        self._translator = translator
        self._is_gone = is_gone
        self._rooms: dict[str, Room] = {}
        self._expiry: dict[str, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        return len(self._rooms)

    def create(self, wait_for_speaker: bool = True) -> Room:
        """A new room with fresh keys. `wait_for_speaker`: made ahead of its speaker (POST), so it
        ends after `room_wait_s` unless a speaker starts."""
        if len(self._rooms) >= self.limits.max_rooms:
            raise ProtocolError(
                ErrorCode.SERVER_BUSY,
                f"the server has {len(self._rooms)} of {self.limits.max_rooms} rooms open; try again later",
            )
        room_id = secrets.token_hex(ROOM_ID_BYTES)
        keys = RoomKeys(speak=access.new_token(), read=access.new_token())
        room = Room(room_id, keys, self.limits, self._scheduler, self._translator, self._forget, self._is_gone)
        self._rooms[room_id] = room
        if wait_for_speaker:
            loop = asyncio.get_running_loop()
            self._expiry[room_id] = loop.call_later(self.limits.room_wait_s, self._expire, room)
        log.info("room %s created", room_id)
        return room

    def get(self, room_id: str) -> Room:
        room = self._rooms.get(room_id)
        if room is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_ROOM,
                f"there is no room {room_id!r} on this server: check the link, or the room has ended",
            )
        return room

    def for_speaker(self, room_id: str, key: str | None) -> Room:
        """The room a stream may speak into with `key`; raises UNKNOWN_ROOM or FORBIDDEN."""
        room = self.get(room_id)
        if not key:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"speaking into room {room_id} needs its speak key: give it as 'room_key'"
            )
        if room.keys.is_read_key(key):
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"that is room {room_id}'s read key: it lets people read the captions, not speak. "
                "Speak with the speak_key that POST /v1/rooms returned",
            )
        if not room.keys.is_speak_key(key):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"wrong speak key for room {room_id}")
        return room

    def for_reader(self, room_id: str, key: str | None) -> Room:
        """The room whose captions `key` lets one read; raises UNKNOWN_ROOM or FORBIDDEN."""
        room = self.get(room_id)
        if not key or not room.keys.allows_reading(key):
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"reading room {room_id} needs its read key: open the link the speaker shares "
                "(it carries ?key=...)" if not key else f"wrong key for room {room_id}",
            )
        return room

    def speaking(self, room: Room) -> None:
        """The room's speaker started: it no longer expires."""
        handle = self._expiry.pop(room.id, None)
        if handle is not None:
            handle.cancel()

    def end_waiting(self) -> None:
        """Ends the rooms that have no speaker (at shutdown: nothing would ever end them)."""
        for room in [room for room in self._rooms.values() if room.state == WAITING]:
            room.end()

    def status(self) -> dict[str, Any]:
        """Server-wide room counters for /v1/status."""
        rooms = list(self._rooms.values())
        return {
            "rooms": len(rooms),
            "max_rooms": self.limits.max_rooms,
            "source_pipelines": sum(room.describe()["source_pipelines"] for room in rooms),
            "translation_streams": sum(room.n_translation_streams for room in rooms),
            "listeners": sum(room.listeners.n_active for room in rooms),
        }

    def _expire(self, room: Room) -> None:
        self._expiry.pop(room.id, None)
        if room.state == WAITING:
            log.info("room %s: no speaker within %g s; it ends", room.id, self.limits.room_wait_s)
            room.end()

    def _forget(self, room: Room) -> None:
        self._rooms.pop(room.id, None)
        handle = self._expiry.pop(room.id, None)
        if handle is not None:
            handle.cancel()
