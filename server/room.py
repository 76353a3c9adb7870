"""A room: one speaker, many readers, each reading in their own language.

The room hears its speaker once: the speaker's `StreamPipeline` runs a `SourceSession` (VAD,
recogniser, source agreement, sentence closing) and hands its events to `on_source_events`. Each
language that someone reads has a `LanguageStream`, which translates every closed sentence once,
in order, on the shared translator through the model scheduler, and hands each event to all of its
readers. A reader (a listener, or the speaker reading its own target) has its own outbox, so a slow
one drops only its own tentative updates. Compute grows with the languages, not with the readers:
a language whose last reader leaves stops at once.

Everything here runs on the event loop; only the translation calls run in the scheduler's threads.
Joining a language takes its history and subscribes in one step on the loop, so a late joiner gets
the committed history and then the live events with neither a gap nor a repeat."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from streamst.languages import Language
from streamst.server.limits import Admission, Limits
from streamst.server.scheduler import ModelScheduler
from streamst.sessions.source import SentenceStream
from streamst.translators.base import Translator
from streamst.types import Event, FinalEvent, PartialEvent
from streamst.wire import ErrorCode, ProtocolError

log = logging.getLogger("streamst.server.room")

WAITING = "waiting"  # made, no speaker yet
LIVE = "live"  # the speaker streams
FINISHING = "finishing"  # the speaker stopped; the languages translate what is left
ENDED = "ended"


class Reader(Protocol):
    """Someone reading one language of a room."""

    is_speaker: bool  # the speaker reading its own target (not a listener)

    def deliver(self, event: Event) -> None:
        """An event of the language read; called on the loop, must not block."""

    def room_ended(self, error: ProtocolError | None) -> None:
        """Nothing more comes: the room ended (or, with `error`, this language failed)."""


@dataclass(frozen=True)
class RoomKeys:
    """Two distinct random keys: one lets a stream speak into the room, the other lets people read it."""

    speak: str
    read: str

    def is_speak_key(self, key: str) -> bool:
        return _same(key, self.speak)

    def is_read_key(self, key: str) -> bool:
        return _same(key, self.read)

    def allows_reading(self, key: str) -> bool:
        return self.is_read_key(key) | self.is_speak_key(key)  # both compared, whichever matches


class History:
    """Recent finals, oldest first, bounded by the speech they span (`max_s`) and by count."""

    def __init__(self, max_s: float, max_finals: int) -> None:
        self.max_ms = max_s * 1000
        self._finals: deque[FinalEvent] = deque(maxlen=max_finals)

    def __len__(self) -> int:
        return len(self._finals)

    def add(self, final: FinalEvent) -> None:
        self._finals.append(final)
        while self._finals and final.end_ms - self._finals[0].end_ms > self.max_ms:
            self._finals.popleft()

    def since(self, max_s: float) -> list[FinalEvent]:
        """The finals that ended within `max_s` of the last one."""
        if not self._finals:
            return []
        from_ms = self._finals[-1].end_ms - max_s * 1000
        return [f for f in self._finals if f.end_ms >= from_ms]

    def snapshot(self) -> list[FinalEvent]:
        return list(self._finals)


class LanguageStream:
    """One caption language of a room: its readers, its history, and the task that translates the
    room's source events in order (partials pass at once; a stale one is skipped)."""

    def __init__(self, room: Room, target: Language, seed: Iterable[FinalEvent] = ()) -> None:
        self.room = room
        self.target = target
        self.readers: set[Reader] = set()
        self.history = History(room.limits.room_history_s, room.limits.room_history_finals)
        self.n_finals = 0  # finals published
        self._queue: deque[Event] = deque(seed)
        self._wakeup = asyncio.Event()
        self._closing = False
        self._sentences: SentenceStream | None = None
        self.task = asyncio.create_task(self._work(), name=f"room-{room.id}-{target.code}")
        if self._queue:
            self._wakeup.set()

    @property
    def translates(self) -> bool:
        """Whether this language costs model calls (not the transcript of the spoken language)."""
        return self.room.source is None or self.target != self.room.source

    @property
    def n_listeners(self) -> int:
        return sum(1 for reader in self.readers if not reader.is_speaker)

    def put(self, event: Event) -> None:
        if not self._closing:
            self._queue.append(event)
            self._wakeup.set()

    def close(self) -> None:
        """No more source events: what is queued is still translated."""
        self._closing = True
        self._wakeup.set()

    def cancel(self) -> None:
        self._closing = True
        self.task.cancel()
        self.room.scheduler.forget(self)

    async def _work(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                event = self._queue.popleft()
                if isinstance(event, PartialEvent):
                    if not (self._queue and self._queue[0].segment_id == event.segment_id):
                        self._publish(self._stream().partial(event))
                    continue
                sentences = self._stream()
                final = await self.room.scheduler.run(
                    lambda: sentences.final(event), stream=self, meter=self.room.add_compute
                )
                self._publish(final)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - one language failing must not end the others
            log.error("room %s: translating into %s failed", self.room.id, self.target.code, exc_info=e)
            error = ProtocolError(
                ErrorCode.ENGINE_ERROR,
                f"translating this room into {self.target.name} failed ({e}); the other languages go on. "
                "Join again to restart this one",
            )
            self.room.drop(self)
            for reader in list(self.readers):
                reader.room_ended(error)
        finally:
            self.room.scheduler.forget(self)

    def _stream(self) -> SentenceStream:
        if self._sentences is None:
            source = self.room.source
            assert source is not None, "source events before the speaker started"
            self._sentences = SentenceStream(self.room.translator, source, self.target, self.room.translation_context)
        return self._sentences

    def _publish(self, event: Event) -> None:
        if isinstance(event, FinalEvent):
            self.history.add(event)
            self.n_finals += 1
        for reader in list(self.readers):
            reader.deliver(event)


class Room:
    """One room's state on the loop: its speaker's source side, its languages and its readers."""

    def __init__(
        self,
        room_id: str,
        keys: RoomKeys,
        limits: Limits,
        scheduler: ModelScheduler,
        translator: Callable[[], Translator],
        on_ended: Callable[[Room], None],
        is_gone: Callable[[Any], bool],
    ) -> None:
        self.id = room_id
        self.keys = keys
        self.limits = limits
        self.scheduler = scheduler
        self._translator = translator
        self._on_ended = on_ended
        self.state = WAITING
        self.source: Language | None = None
        self.translation_context = 0
        self.languages: dict[str, LanguageStream] = {}
        self.listeners = Admission(limits.max_listeners_per_room, is_gone)  # slots taken at the handshake
        self.compute_s = 0.0  # seconds the room's model calls took (speech and translation)
        self.audio_ms = 0  # speaker audio received
        self.n_source_finals = 0
        self._source_history = History(limits.room_history_s, limits.room_history_finals)

    @property
    def translator(self) -> Translator:
        return self._translator()

    @property
    def ended(self) -> bool:
        return self.state == ENDED

    @property
    def n_translation_streams(self) -> int:
        return sum(1 for stream in self.languages.values() if stream.translates)

    def add_compute(self, seconds: float) -> None:
        self.compute_s += seconds

    # the speaker ----------------------------------------------------------------------------------

    def start_speaking(self, source: Language, translation_context: int = 0) -> None:
        """The speaker's stream opens: the room hears `source` from now on."""
        if self.state != WAITING:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"room {self.id} already has a speaker (or has ended); one stream speaks into a room. "
                "Create another room to speak separately",
            )
        self.state = LIVE
        self.source = source
        self.translation_context = translation_context

    def on_source_events(self, events: list[Event]) -> None:
        """Events of the speaker's source session (the pipeline calls this on the loop)."""
        for event in events:
            if isinstance(event, FinalEvent):
                self._source_history.add(event)
                self.n_source_finals += 1
            for stream in self.languages.values():
                stream.put(event)

    async def finish(self, timeout_s: float) -> bool:
        """The speaker stopped and every source final is in: each language translates what it still
        has (within `timeout_s`), then the room ends. Whether every language got through."""
        if self.state == ENDED:
            return True
        self.state = FINISHING
        for stream in self.languages.values():
            stream.close()
        tasks = [stream.task for stream in self.languages.values()]
        pending: set[asyncio.Task[None]] = set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        self.end()
        return not pending

    def end(self) -> None:
        """The room is over: nothing more is translated, every reader is told, the room is forgotten."""
        if self.state == ENDED:
            return
        self.state = ENDED
        readers = [reader for stream in self.languages.values() for reader in stream.readers]
        for stream in self.languages.values():
            stream.cancel()
        self.languages.clear()
        for reader in readers:
            reader.room_ended(None)
        self._on_ended(self)
        log.info("room %s ended: %d finals, %.1f s of model time", self.id, self.n_source_finals, self.compute_s)

    # readers --------------------------------------------------------------------------------------

    def check_language(self, target: Language) -> None:
        """Raises ROOM_FULL when reading `target` would need a language beyond the room's limit."""
        if target.code in self.languages or len(self.languages) < self.limits.max_languages_per_room:
            return
        raise ProtocolError(
            ErrorCode.ROOM_FULL,
            f"room {self.id} already translates into {len(self.languages)} languages "
            f"({', '.join(sorted(self.languages))}), its limit; read one of those, or try again later",
        )

    def join(self, reader: Reader, target: Language) -> list[FinalEvent]:
        """Subscribes `reader` to `target` and returns that language's history, in one step on the
        loop: the history and the events delivered from now on neither overlap nor leave a gap. A
        language nobody read yet starts by translating the last `room_catch_up_s` of sentences."""
        if self.state == ENDED:
            raise ProtocolError(ErrorCode.UNKNOWN_ROOM, f"room {self.id} has ended")
        stream = self.languages.get(target.code)
        if stream is None:
            self.check_language(target)
            seed = self._source_history.since(self.limits.room_catch_up_s) if self.limits.room_catch_up_s else []
            stream = LanguageStream(self, target, seed)
            self.languages[target.code] = stream
            if self.state == FINISHING:
                stream.close()
        history = stream.history.snapshot()
        stream.readers.add(reader)
        return history

    def drop(self, stream: LanguageStream) -> None:
        """A language that failed: forgotten, so that the next reader of it starts it afresh."""
        if self.languages.get(stream.target.code) is stream:
            del self.languages[stream.target.code]

    def leave(self, reader: Reader) -> None:
        """`reader` reads no more; a language left without readers stops costing anything."""
        for code, stream in list(self.languages.items()):
            stream.readers.discard(reader)
            if not stream.readers:
                stream.cancel()
                del self.languages[code]

    def describe(self) -> dict[str, Any]:
        """The room's counters, for GET /v1/rooms/{id} and /v1/status."""
        return {
            "id": self.id,
            "state": self.state,
            "source": self.source.code if self.source else None,
            "source_pipelines": 1 if self.state in (LIVE, FINISHING) else 0,
            "translation_streams": self.n_translation_streams,
            "languages": {
                code: {"listeners": stream.n_listeners, "readers": len(stream.readers), "finals": stream.n_finals,
                       "translates": stream.translates}  # fmt: skip
                for code, stream in sorted(self.languages.items())
            },
            "listeners": self.listeners.n_active,
            "max_listeners": self.limits.max_listeners_per_room,
            "max_languages": self.limits.max_languages_per_room,
            "audio_ms": self.audio_ms,
            "finals": self.n_source_finals,
            "model_s": round(self.compute_s, 3),
        }


def _same(given: str, key: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8"))
