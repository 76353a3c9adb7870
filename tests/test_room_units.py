"""A room's logic without sockets, on the scripted translator (tests/scripted.py): per-language
fan-out, the history/live seam of a late joiner, a language that stops when its last reader leaves,
a slow reader dropping only its own tentative updates, the keys and the room registry."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from scripted import ScriptedTranslator

from streamst.languages import resolve
from streamst.server.limits import Limits
from streamst.server.outbox import Outbox
from streamst.server.room import History, Room, RoomKeys
from streamst.server.rooms import Rooms
from streamst.server.scheduler import ModelScheduler
from streamst.sessions.source import SentenceStream
from streamst.types import Event, FinalEvent, PartialEvent
from streamst.wire import ErrorCode, ProtocolError

EN, DE, ES, ZH = (resolve(code) for code in ("en", "de", "es", "zh"))
TIMEOUT_S = 30.0


def _partial(segment_id: int, source: str, at_ms: int) -> PartialEvent:
    return PartialEvent(segment_id, source, "", "", "", segment_id * 1000, at_ms, "cascade", at_ms, 0.0)


def _final(segment_id: int, source: str) -> FinalEvent:
    end_ms = segment_id * 1000 + 900
    return FinalEvent(segment_id, source, "", "", "", segment_id * 1000, end_ms, "cascade", end_ms, 0.0)


class Reader:
    """A reader with an outbox, drained at once (`fast`) or never."""

    def __init__(self, max_pending: int = 1000, is_speaker: bool = False) -> None:
        self.is_speaker = is_speaker
        self.outbox = Outbox(max_pending, on_overflow=lambda: self.overflowed.append(True))
        self.overflowed: list[bool] = []
        self.ended: list[ProtocolError | None] = []

    def deliver(self, event: Event) -> None:
        self.outbox.put_event(event)

    def room_ended(self, error: ProtocolError | None) -> None:
        self.ended.append(error)

    def items(self) -> list[Event]:
        return list(self.outbox._items)

    def finals(self) -> list[str]:
        return [e.committed_text for e in self.items() if isinstance(e, FinalEvent)]


@contextlib.asynccontextmanager
async def a_room(translator: ScriptedTranslator | None = None, limits: Limits = Limits()):
    scheduler = ModelScheduler(concurrency=1)
    translator = translator or ScriptedTranslator()
    ended: list[Room] = []
    room = Room("r1", RoomKeys("speak", "read"), limits, scheduler, lambda: translator, ended.append, lambda c: False)
    try:
        yield room, translator
    finally:
        room.end()
        scheduler.shutdown()


async def _until(condition, timeout_s: float = TIMEOUT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


def test_sentence_stream_translates_each_final_and_the_transcript_costs_nothing():
    translator = ScriptedTranslator()
    german = SentenceStream(translator, EN, DE)
    english = SentenceStream(translator, EN, EN)
    source = _final(0, "good morning.")
    assert german.final(source).committed_text == "GOOD MORNING."
    assert german.final(source).committed_delta == "GOOD MORNING."
    assert english.final(source).committed_text == "good morning."
    assert english.partial(_partial(1, "and th", 1500)).tentative_text == "and th"
    assert german.final(_final(1, "")).committed_text == ""
    assert [c.stream_key for c in translator.calls] == [german.stream_id, german.stream_id]


def test_each_language_translates_each_sentence_once_for_all_its_readers():
    async def main():
        async with a_room() as (room, translator):
            room.start_speaking(EN)
            readers = {code: [Reader() for _ in range(5)] for code in ("de", "es", "zh")}
            for code, group in readers.items():
                for reader in group:
                    assert room.join(reader, resolve(code)) == []
            room.on_source_events([_partial(0, "hello", 500), _final(0, "hello there."), _final(1, "bye now.")])
            room.on_source_events([_partial(2, "and", 2300)])
            await _until(lambda: all(len(r.finals()) == 2 for group in readers.values() for r in group))
            assert room.describe()["translation_streams"] == 3
            return readers, translator

    readers, translator = asyncio.run(main())
    assert len(translator.calls) == 3 * 2  # languages × sentences, not readers × sentences
    assert len({call.stream_key for call in translator.calls}) == 3
    for group in readers.values():
        assert all(r.finals() == ["HELLO THERE.", "BYE NOW."] for r in group)
        # The partial its own final followed at once was stale and skipped; the open segment's is shown.
        assert all([type(e).__name__ for e in r.items()] == ["FinalEvent", "FinalEvent", "PartialEvent"] for r in group)


def test_a_late_joiner_gets_history_then_live_events_with_no_gap_or_repeat():
    """Joins while a sentence is being translated and another waits: that one and the next arrive live."""

    async def main():
        async with a_room(ScriptedTranslator(sleep_s=0.05)) as (room, _):
            room.start_speaking(EN)
            early = Reader()
            room.join(early, DE)
            room.on_source_events([_final(i, f"sentence {i}.") for i in range(3)])
            await _until(lambda: len(early.finals()) >= 1)
            late = Reader()
            history = room.join(late, DE)
            room.on_source_events([_final(3, "sentence 3.")])
            await _until(lambda: len(early.finals()) == 4)
            await _until(lambda: len(history) + len(late.finals()) == 4, timeout_s=5)
            return early, late, history

    early, late, history = asyncio.run(main())
    assert 1 <= len(history) < 4
    assert [f.committed_text for f in history] + late.finals() == early.finals()
    assert [f.segment_id for f in history] + [e.segment_id for e in late.items()] == [0, 1, 2, 3]


def test_a_language_stops_when_its_last_reader_leaves_and_a_new_one_catches_up():
    async def main():
        async with a_room() as (room, translator):
            room.start_speaking(EN)
            german, spanish = Reader(), Reader()
            room.join(german, DE)
            room.join(spanish, ES)
            room.on_source_events([_final(0, "one.")])
            await _until(lambda: len(german.finals()) == 1 and len(spanish.finals()) == 1)
            room.leave(spanish)
            assert sorted(room.languages) == ["de"] and room.n_translation_streams == 1
            room.on_source_events([_final(1, "two."), _final(2, "three.")])
            await _until(lambda: len(german.finals()) == 3)
            n_calls = len(translator.calls)
            back = Reader()
            assert room.join(back, ES) == []  # its history starts with the catch-up translation
            await _until(lambda: len(back.finals()) == 3)
            return translator, n_calls, back

    translator, n_calls, back = asyncio.run(main())
    assert n_calls == 4  # de: 3, es: 1 while it was read
    assert back.finals() == ["ONE.", "TWO.", "THREE."] and len(translator.calls) == 7


def test_a_slow_reader_drops_only_its_own_tentative_updates():
    async def main():
        async with a_room() as (room, _):
            room.start_speaking(EN)
            fast, slow = Reader(), Reader(max_pending=3)
            room.join(fast, EN)
            room.join(slow, EN)
            received: list[Event] = []

            async def drain():
                while (item := await fast.outbox.get()) is not None:
                    received.append(item)

            drainer = asyncio.create_task(drain())
            for i in range(3):
                for at_ms in (200, 400, 600, 800):
                    room.on_source_events([_partial(i, f"words {i} at {at_ms}", i * 1000 + at_ms)])
                    await asyncio.sleep(0.01)
                room.on_source_events([_final(i, f"sentence {i}.")])
                await asyncio.sleep(0.01)
            await _until(lambda: sum(isinstance(e, FinalEvent) for e in received) == 3)
            fast.outbox.close()
            await drainer
            return fast, slow, received

    fast, slow, received = asyncio.run(main())
    assert sum(isinstance(e, PartialEvent) for e in received) == 12 and fast.outbox.n_dropped == 0
    assert slow.finals() == ["sentence 0.", "sentence 1.", "sentence 2."]
    assert slow.outbox.n_dropped == 12 and not any(isinstance(e, PartialEvent) for e in slow.items())


def test_a_room_ending_tells_every_reader_and_forgets_its_languages():
    async def main():
        async with a_room() as (room, _):
            room.start_speaking(EN)
            readers = [Reader(), Reader(), Reader(is_speaker=True)]
            for reader, language in zip(readers, (DE, ES, DE)):
                room.join(reader, language)
            assert room.describe()["languages"]["de"] == {"listeners": 1, "readers": 2, "finals": 0, "translates": True}
            room.on_source_events([_final(0, "last words.")])
            assert await room.finish(timeout_s=TIMEOUT_S)
            return room, readers

    room, readers = asyncio.run(main())
    assert all(r.ended == [None] and r.finals() == ["LAST WORDS."] for r in readers)
    assert room.ended and room.languages == {} and room.describe()["source_pipelines"] == 0


def test_a_language_that_fails_ends_its_readers_only_and_starts_afresh_when_read_again():
    async def main():
        async with a_room(ScriptedTranslator(fail_calls=frozenset({1}))) as (room, translator):
            room.start_speaking(EN)
            german, spanish = Reader(), Reader()
            room.join(german, DE)
            room.on_source_events([_final(0, "one.")])
            await _until(lambda: len(german.finals()) == 1)
            room.join(spanish, ES)  # its catch-up translation is call 1, which fails
            await _until(lambda: spanish.ended != [])
            room.on_source_events([_final(1, "two.")])
            await _until(lambda: len(german.finals()) == 2)
            again = Reader()
            room.join(again, ES)
            await _until(lambda: len(again.finals()) == 2)
            return german, spanish, again, sorted(room.languages)

    german, spanish, again, languages = asyncio.run(main())
    (error,) = spanish.ended
    assert error.code == ErrorCode.ENGINE_ERROR and "Spanish" in str(error)
    assert german.ended == [None]  # only by the room's end, when the test closes it
    assert german.finals() == ["ONE.", "TWO."] and again.finals() == ["ONE.", "TWO."]
    assert languages == ["de", "es"]


def test_history_is_bounded_by_time_and_count():
    history = History(max_s=2.5, max_finals=100)
    for i in range(10):
        history.add(_final(i, f"s{i}."))
    assert [f.segment_id for f in history.snapshot()] == [7, 8, 9]
    history = History(max_s=600, max_finals=4)
    for i in range(10):
        history.add(_final(i, f"s{i}."))
    assert [f.segment_id for f in history.snapshot()] == [6, 7, 8, 9]
    assert [f.segment_id for f in history.since(1.0)] == [8, 9]


def test_keys_and_languages_and_room_limits():
    async def main():
        limits = Limits(max_rooms=2, max_languages_per_room=2)
        rooms = Rooms(limits, ModelScheduler(1), ScriptedTranslator, lambda c: False)
        room = rooms.create()
        assert room.keys.speak != room.keys.read and len(room.keys.read) >= 32
        assert rooms.for_speaker(room.id, room.keys.speak) is room
        assert rooms.for_reader(room.id, room.keys.read) is room
        errors = {}
        for name, call in {
            "read key speaks": lambda: rooms.for_speaker(room.id, room.keys.read),
            "no key speaks": lambda: rooms.for_speaker(room.id, None),
            "wrong key reads": lambda: rooms.for_reader(room.id, "guess"),
            "unknown room": lambda: rooms.get("nosuchroom"),
        }.items():
            with pytest.raises(ProtocolError) as raised:
                call()
            errors[name] = raised.value
        room.join(Reader(), DE)
        room.join(Reader(), ES)
        with pytest.raises(ProtocolError) as raised:
            room.join(Reader(), ZH)
        errors["third language"] = raised.value
        rooms.create()
        with pytest.raises(ProtocolError) as raised:
            rooms.create()
        errors["third room"] = raised.value
        room.start_speaking(EN)
        with pytest.raises(ProtocolError) as raised:
            room.start_speaking(EN)
        errors["second speaker"] = raised.value
        status = rooms.status()
        room.end()
        return errors, status, len(rooms)

    errors, status, n_rooms_left = asyncio.run(main())
    assert errors["read key speaks"].code == ErrorCode.FORBIDDEN and "read key" in str(errors["read key speaks"])
    assert errors["no key speaks"].code == ErrorCode.FORBIDDEN and "room_key" in str(errors["no key speaks"])
    assert errors["wrong key reads"].code == ErrorCode.FORBIDDEN
    assert errors["unknown room"].code == ErrorCode.UNKNOWN_ROOM and "nosuchroom" in str(errors["unknown room"])
    assert errors["third language"].code == ErrorCode.ROOM_FULL and "de, es" in str(errors["third language"])
    assert errors["third room"].code == ErrorCode.SERVER_BUSY
    assert errors["second speaker"].code == ErrorCode.FORBIDDEN
    assert status == {"rooms": 2, "max_rooms": 2, "source_pipelines": 1, "translation_streams": 2, "listeners": 0}
    assert n_rooms_left == 1
