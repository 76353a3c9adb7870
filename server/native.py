"""The native protocol (`/v1/stream`): `start` → audio frames → `stop`; see `streamst.wire`.

A `start` with a `room` makes this stream a room's speaker: its audio runs the room's source side
(`SourceSession`), and the connection reads its own `target` as one of the room's readers. The room
ends when this stream ends; see `streamst.server.room`."""

from __future__ import annotations

import logging

from streamst import wire
from streamst.audio import float32_bytes_to_array, pcm16_to_float32
from streamst.errors import AudioError
from streamst.languages import Language
from streamst.server import policies
from streamst.server.connection import STOPPED, Ending, StreamConnection
from streamst.server.policies import SessionChoice
from streamst.server.room import Room
from streamst.types import Event
from streamst.wire import ErrorCode, ProtocolError

log = logging.getLogger("streamst.server.native")


ROOM_MODE = "cascade"  # rooms translate closed sentences, once per language


class NativeConnection(StreamConnection):
    endpoint = "native"
    is_speaker = True  # as a room's reader: the speaker reading its own target

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._start: wire.Start | None = None
        self.room: Room | None = None

    async def on_text(self, text: str) -> None:
        message = wire.parse_client_message(text)
        if isinstance(message, wire.Stop):
            if self._start is None:
                raise ProtocolError(ErrorCode.NOT_STARTED, "'stop' before 'start'; send 'start' first")
            self.end(STOPPED)
        elif self._start is not None:
            error = ProtocolError(
                ErrorCode.ALREADY_STARTED,
                "this connection already has a stream; the second 'start' is ignored. "
                "Open a new connection for another stream",
            )
            self.outbox.put_text(wire.encode(error.to_message(fatal=False)))
        else:
            await self._open(message)

    async def on_audio(self, data: bytes) -> None:
        if self._start is None:
            raise ProtocolError(
                ErrorCode.NOT_STARTED, "audio arrived before 'start'; send 'start' first and wait for 'ready'"
            )
        wire.check_frame(len(data), self._start.sample_format, self.limits.max_frame_bytes)
        if not data:
            return
        try:
            audio = pcm16_to_float32(data) if self._start.sample_format == "pcm16" else float32_bytes_to_array(data)
        except AudioError as e:
            raise ProtocolError(ErrorCode.BAD_AUDIO, str(e)) from e
        self.feed(audio)
        if self.room is not None and self.pipeline is not None:
            self.room.audio_ms = self.pipeline.fed_ms

    def render(self, event: Event) -> list[str]:
        return [wire.encode(wire.caption(event))]

    def closing_texts(self, ending: Ending) -> list[str]:
        texts = [wire.encode(ending.error.to_message())] if ending.error else []
        reason = "shutdown" if ending.reason == "shutdown" else "error" if ending.error else "stop"
        pipeline = self.pipeline
        end = wire.End(
            reason=reason,
            audio_ms=pipeline.fed_ms if pipeline else 0,
            n_segments=pipeline.n_finals if pipeline else 0,
        )
        return [*texts, wire.encode(end)]

    async def _open(self, start: wire.Start) -> None:
        source, target = self.app.check_languages(start.source, start.target)
        if start.room is not None:
            await self._open_room(start, source, target)
            return
        mode = start.mode or self.app.config.default_mode
        choice = policies.choose(mode, start.policy, start.knob, start.step_ms, realtime=self.app.config.realtime)
        session = await self.app.open_session(source.code, target.code, choice)
        self._start = start
        self.start_pipeline(session, start.sample_rate_hz)
        self._ready(start, source, target, choice)

    async def _open_room(self, start: wire.Start, source: Language, target: Language) -> None:
        """Speaks into a room: the one named (with its speak key), or a new one for this stream."""
        if (start.mode or ROOM_MODE) != ROOM_MODE:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_MODE,
                f"rooms run the {ROOM_MODE} mode (each sentence is translated once per language); "
                f"leave 'mode' out or give {ROOM_MODE!r}",
            )
        choice = policies.choose(ROOM_MODE, start.policy, start.knob, start.step_ms, realtime=self.app.config.realtime)
        rooms = self.app.rooms
        new = start.room == wire.NEW_ROOM
        room = rooms.create(wait_for_speaker=False) if new else rooms.for_speaker(start.room, start.room_key)
        try:
            room.check_language(target)
            session = await self.app.open_source_session(source.code, choice)
            room.start_speaking(source, choice.options.translation_context)
        except ProtocolError:
            if new:
                room.end()
            raise
        rooms.speaking(room)
        self.room = room
        self._start = start
        self.start_pipeline(
            session, start.sample_rate_hz, on_events=room.on_source_events, meter=room.add_compute
        )
        self._ready(start, source, target, choice, room)
        room.join(self, target)

    def _ready(
        self, start: wire.Start, source: Language, target: Language, choice: SessionChoice, room: Room | None = None
    ) -> None:
        ready = wire.Ready(
            session_id=self.session_id,
            source=source.code,
            target=target.code,
            sample_rate_hz=start.sample_rate_hz,
            sample_format=start.sample_format,
            mode=choice.mode,
            policy=choice.policy,
            knob=choice.knob,
            step_ms=choice.step_ms,
            max_frame_bytes=self.limits.max_frame_bytes,
            max_session_s=self.limits.max_session_s,
            idle_timeout_s=self.limits.idle_timeout_s,
            room_id=room.id if room else None,
            read_key=room.keys.read if room else None,
        )
        self.outbox.put_text(wire.encode(ready))
        self.log.event(
            "start",
            room=room.id if room else "-",
            source=source.code,
            target=target.code,
            mode=choice.mode,
            policy=choice.policy or "-",
            knob=choice.knob if choice.knob is not None else "-",
            step_ms=choice.step_ms,
            sample_rate_hz=start.sample_rate_hz,
            sample_format=start.sample_format,
        )

    # as the room's speaker --------------------------------------------------------------------------

    def deliver(self, event: Event) -> None:
        """An event of the room in this stream's target (the speaker reads its own captions)."""
        self._on_events([event])

    def room_ended(self, error: ProtocolError | None) -> None:
        """The room ends with this stream; only a failure of the speaker's own language is news."""
        if error is not None:
            self.outbox.put_text(wire.encode(error.to_message(fatal=False)))

    async def _finish_pipeline(self) -> ProtocolError | None:
        """After the source side's last finals, the room's languages translate what they still have;
        then the room ends and its listeners get `end`."""
        error = await super()._finish_pipeline()
        room = self.room
        if room is None:
            return error
        if error is not None:
            room.end()
            return error
        if await room.finish(self.limits.finish_timeout_s):
            return None
        return ProtocolError(
            ErrorCode.FINISH_TIMEOUT,
            f"the room's languages could not translate its last sentences within "
            f"{self.limits.finish_timeout_s:g} s; their translation is missing; the server is overloaded",
        )

    def on_closed(self) -> None:
        if self.room is not None:
            self.room.end()
