"""The native protocol (`/v1/stream`): `start` → audio frames → `stop`; see `streamst.wire`."""

from __future__ import annotations

import logging

from streamst import wire
from streamst.audio import float32_bytes_to_array, pcm16_to_float32
from streamst.errors import AudioError
from streamst.server import policies
from streamst.server.connection import STOPPED, Ending, StreamConnection
from streamst.types import Event
from streamst.wire import ErrorCode, ProtocolError

log = logging.getLogger("streamst.server.native")


class NativeConnection(StreamConnection):
    endpoint = "native"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._start: wire.Start | None = None

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
        mode = start.mode or self.app.config.default_mode
        choice = policies.choose(mode, start.policy, start.knob, start.step_ms, realtime=self.app.config.realtime)
        session = await self.app.open_session(source.code, target.code, choice)
        self._start = start
        self.start_pipeline(session, start.sample_rate_hz)
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
        )
        self.outbox.put_text(wire.encode(ready))
        self.log.event(
            "start",
            source=source.code,
            target=target.code,
            mode=choice.mode,
            policy=choice.policy or "-",
            knob=choice.knob if choice.knob is not None else "-",
            step_ms=choice.step_ms,
            sample_rate_hz=start.sample_rate_hz,
            sample_format=start.sample_format,
        )
