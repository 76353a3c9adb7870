"""A room's listener (`/v1/rooms/{id}/captions?target=LANG&key=READ_KEY`): receive-only.

The connection joins its language of the room, sends `joined`, the language's recent finals (the
committed history) and then every live `partial`/`final`, like the native protocol's. It ends with
`end` when the room ends (the speaker stopped), or when the listener leaves. A listener sends
nothing: any frame it sends is refused with `forbidden`. Its own outbox drops only its own stale
tentative updates when it reads slowly; finals are never dropped."""

from __future__ import annotations

import asyncio

from streamst import wire
from streamst.languages import Language
from streamst.server.connection import Ending, StreamConnection, error_ending
from streamst.server.room import Room
from streamst.types import Event, FinalEvent
from streamst.wire import ErrorCode, ProtocolError

ROOM_ENDED = Ending("stop", finish=False)


class ListenerConnection(StreamConnection):
    endpoint = "listener"
    is_speaker = False

    def __init__(self, websocket, app, session_id: str, room: Room, target: Language) -> None:
        super().__init__(websocket, app, session_id)
        self.room = room
        self.target = target
        self.n_finals = 0  # finals sent (history and live)

    async def run(self) -> None:
        try:
            self._join()
            await super().run()
        finally:
            self.room.leave(self)

    def _join(self) -> None:
        try:
            history = self.room.join(self, self.target)
        except ProtocolError as e:  # the room ended or filled up between the handshake and now
            self.end(error_ending(e))
            return
        self.outbox.max_pending += len(history)  # the history arrives at once; the bound is for live events
        source = self.room.source.code if self.room.source else None
        self.outbox.put_text(wire.encode(wire.Joined(self.room.id, self.target.code, source, len(history))))
        for final in history:
            self.deliver(final)
        self.log.event("join", room=self.room.id, target=self.target.code, history=len(history))

    # the room's side ------------------------------------------------------------------------------

    def deliver(self, event: Event) -> None:
        if isinstance(event, FinalEvent):
            self.n_finals += 1
        self.outbox.put_event(event)

    def room_ended(self, error: ProtocolError | None) -> None:
        self.end(error_ending(error) if error is not None else ROOM_ENDED)

    # the protocol ---------------------------------------------------------------------------------

    async def on_text(self, text: str) -> None:
        raise self._refusal()

    async def on_audio(self, data: bytes) -> None:
        raise self._refusal()

    def render(self, event: Event) -> list[str]:
        return [wire.encode(wire.caption(event))]

    def closing_texts(self, ending: Ending) -> list[str]:
        texts = [wire.encode(ending.error.to_message())] if ending.error else []
        reason = "shutdown" if ending.reason == "shutdown" else "error" if ending.error else "stop"
        end = wire.End(reason=reason, audio_ms=self.room.audio_ms, n_segments=self.n_finals)
        return [*texts, wire.encode(end)]

    def _deadline(self) -> float:
        """A listener sends nothing, so no idle timeout: only the lifetime bounds it."""
        return self._opened_s + self.limits.max_lifetime_s

    async def _watch_shutdown(self) -> None:
        """At shutdown the room ends (after its speaker's last finals), and that ends the listener."""
        await asyncio.Future()

    def _refusal(self) -> ProtocolError:
        return ProtocolError(
            ErrorCode.FORBIDDEN,
            f"a listener of room {self.room.id} only reads captions: it cannot send audio or messages. "
            f"To speak into the room, connect to {wire.STREAM_PATH} with the room's speak key",
        )
