"""The native protocol's messages: building, parsing, validation, and agreement with the JSON Schema."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from streamst import wire
from streamst.types import FinalEvent, PartialEvent
from streamst.wire import ErrorCode, ProtocolError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "protocol.schema.json"


def _partial(**changes) -> PartialEvent:
    fields = dict(
        segment_id=3,
        source_text="Guten Tag",
        committed_text="Good",
        committed_delta="Good",
        tentative_text="day",
        start_ms=100,
        end_ms=900,
        mode="cascade",
        audio_ms=960,
        emitted_ms=1200.5,
    )
    return PartialEvent(**(fields | changes))


def _final(**changes) -> FinalEvent:
    fields = dict(
        segment_id=3,
        source_text="Guten Tag.",
        committed_text="Good day.",
        committed_delta=" day.",
        tentative_text="",
        start_ms=100,
        end_ms=1100,
        mode="cascade",
        audio_ms=1600,
        emitted_ms=2000.0,
    )
    return FinalEvent(**(fields | changes))


def _server_messages() -> list[wire.ServerMessage]:
    return [
        wire.Ready("abc", "en", "de", 16000, "pcm16", "cascade", None, None, 1000, 262144, 14400.0, 30.0),
        wire.Ready("abc", "en", "de", 16000, "pcm16", "direct", "wait-k", 3.0, 1000, 262144, 14400.0, 30.0),
        wire.Ready("abc", "en", "de", 16000, "pcm16", "cascade", "sentence", 1000.0, 1000, 262144, 14400.0, 30.0,
                   room_id="r0om1d", read_key="k3y"),  # fmt: skip
        wire.Joined("r0om1d", "de", "en", 3),
        wire.Joined("r0om1d", "de", None, 0),
        wire.caption(_partial()),
        wire.caption(_final(fallback_reason="")),
        wire.Error(ErrorCode.BAD_AUDIO, "odd bytes; send whole samples"),
        wire.End("stop", 5000, 2),
    ]


def _client_messages() -> list[wire.ClientMessage]:
    return [
        wire.Start("en", "zh"),
        wire.Start("de", "en", 48000, "float32", "direct", "wait-k", 3.0, 500),
        wire.Start("en", "de", mode="cascade", room="r0om1d", room_key="sp3ak"),
        wire.Start("en", "de", room=wire.NEW_ROOM),
        wire.Stop(),
    ]


# building and parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize("message", _client_messages(), ids=lambda m: m.type)
def test_client_messages_round_trip(message):
    assert wire.parse_client_message(wire.encode(message)) == message


@pytest.mark.parametrize("message", _server_messages(), ids=lambda m: m.type)
def test_server_messages_round_trip(message):
    assert wire.parse_server_message(wire.encode(message)) == message


def test_encoding_keeps_text_readable_and_compact():
    text = wire.encode(wire.caption(_final(committed_text="你好。", committed_delta="你好。")))
    assert "你好。" in text
    assert ": " not in text and ", " not in text


def test_caption_carries_every_event_field_a_client_needs():
    message = json.loads(wire.encode(wire.caption(_partial())))
    assert message == {
        "type": "partial",
        "segment_id": 3,
        "committed_text": "Good",
        "committed_delta": "Good",
        "tentative_text": "day",
        "source_text": "Guten Tag",
        "start_ms": 100,
        "end_ms": 900,
        "mode": "cascade",
        "audio_ms": 960,
    }
    final = json.loads(wire.encode(wire.caption(_final(fallback_reason="direct path failed"))))
    assert final["type"] == "final" and final["fallback_reason"] == "direct path failed"


def test_start_defaults():
    start = wire.parse_client_message('{"type": "start", "source": "en", "target": "zh"}')
    assert start == wire.Start("en", "zh", 16000, "pcm16", None, None, None, None, 1)


def test_a_plain_start_names_no_room_and_a_room_key_needs_a_room():
    assert "room" not in wire.encode(wire.Start("en", "zh"))
    with pytest.raises(ProtocolError) as raised:
        wire.parse_client_message('{"type": "start", "source": "en", "target": "zh", "room_key": "k"}')
    assert raised.value.code == ErrorCode.BAD_MESSAGE and "'room'" in str(raised.value)


def test_start_accepts_whole_floats_and_integer_knobs():
    start = wire.parse_client_message(
        '{"type": "start", "source": " en ", "target": "de", "sample_rate_hz": 44100.0, "knob": 800}'
    )
    assert start.sample_rate_hz == 44100 and start.knob == 800.0 and start.source == "en"


def test_parse_server_message_keeps_unknown_error_codes_and_ignores_new_fields():
    message = wire.parse_server_message(
        '{"type": "error", "code": "from_the_future", "message": "m", "fatal": false, "x": 1}'
    )
    assert message == wire.Error("from_the_future", "m", False)


# validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "says"),
    [
        ("{not json", ErrorCode.BAD_JSON, "not valid JSON"),
        ("[1, 2]", ErrorCode.BAD_JSON, "JSON list"),
        ('"start"', ErrorCode.BAD_JSON, "JSON object"),
        ('{"source": "en"}', ErrorCode.BAD_MESSAGE, "unknown message type None"),
        ('{"type": "begin"}', ErrorCode.BAD_MESSAGE, "expected one of: start, stop"),
        ('{"type": "start", "target": "de"}', ErrorCode.BAD_MESSAGE, "needs a 'source'"),
        ('{"type": "start", "source": "  ", "target": "de"}', ErrorCode.BAD_MESSAGE, "needs a 'source'"),
        ('{"type": "start", "source": "en", "target": 7}', ErrorCode.BAD_MESSAGE, "'target' must be a string"),
        (
            '{"type": "start", "source": "en", "target": "de", "sample_rate": 16000}',
            ErrorCode.BAD_MESSAGE,
            "did you mean 'sample_rate_hz'",
        ),
        (
            '{"type": "start", "source": "en", "target": "de", "sample_rate_hz": true}',
            ErrorCode.BAD_MESSAGE,
            "whole number",
        ),
        (
            '{"type": "start", "source": "en", "target": "de", "sample_rate_hz": 16000.5}',
            ErrorCode.BAD_MESSAGE,
            "whole number",
        ),
        ('{"type": "start", "source": "en", "target": "de", "version": 2}', ErrorCode.UNSUPPORTED_VERSION, "version 1"),
        (
            '{"type": "start", "source": "en", "target": "de", "sample_rate_hz": 7000}',
            ErrorCode.UNSUPPORTED_SAMPLE_RATE,
            "48000",
        ),
        (
            '{"type": "start", "source": "en", "target": "de", "sample_format": "s16le"}',
            ErrorCode.UNSUPPORTED_SAMPLE_FORMAT,
            "'pcm16'",
        ),
        ('{"type": "start", "source": "en", "target": "de", "knob": NaN}', ErrorCode.BAD_OPTION, "finite"),
        ('{"type": "stop", "now": true}', ErrorCode.BAD_MESSAGE, "unknown field 'now'"),
    ],
)
def test_invalid_client_messages_name_the_problem(text, code, says):
    with pytest.raises(ProtocolError) as raised:
        wire.parse_client_message(text)
    assert raised.value.code == code
    assert says in str(raised.value)


def test_protocol_error_becomes_an_error_message():
    error = ProtocolError(ErrorCode.NOT_STARTED, "send 'start' first")
    assert error.to_message() == wire.Error(ErrorCode.NOT_STARTED, "send 'start' first", True)
    assert error.to_message(fatal=False).fatal is False


@pytest.mark.parametrize(
    ("n_bytes", "sample_format", "n_samples"), [(0, "pcm16", 0), (3200, "pcm16", 1600), (6400, "float32", 1600)]
)
def test_check_frame_counts_samples(n_bytes, sample_format, n_samples):
    assert wire.check_frame(n_bytes, sample_format, max_frame_bytes=65536) == n_samples


@pytest.mark.parametrize(
    ("n_bytes", "sample_format", "code"),
    [
        (3201, "pcm16", ErrorCode.BAD_AUDIO),
        (6402, "float32", ErrorCode.BAD_AUDIO),
        (65538, "pcm16", ErrorCode.FRAME_TOO_LARGE),
    ],
)
def test_check_frame_rejects_split_samples_and_large_frames(n_bytes, sample_format, code):
    with pytest.raises(ProtocolError) as raised:
        wire.check_frame(n_bytes, sample_format, max_frame_bytes=65536)
    assert raised.value.code == code


def test_close_codes():
    assert wire.close_code(ErrorCode.BAD_JSON) == wire.CLOSE_POLICY_VIOLATION
    assert wire.close_code(ErrorCode.FRAME_TOO_LARGE) == wire.CLOSE_MESSAGE_TOO_BIG
    assert wire.close_code(ErrorCode.BAD_AUDIO) == wire.CLOSE_UNSUPPORTED_DATA
    assert wire.close_code(ErrorCode.OVERLOADED) == wire.CLOSE_TRY_AGAIN_LATER
    assert wire.close_code(ErrorCode.INTERNAL_ERROR) == wire.CLOSE_INTERNAL_ERROR


# the JSON Schema ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def test_schema_lists_every_message_and_field(schema):
    definitions = schema["$defs"]
    for cls in (wire.Start, wire.Stop, wire.Ready, wire.Joined, wire.Error, wire.End):
        kind = cls.__dataclass_fields__["type"].default
        assert set(definitions[kind]["properties"]) == {f.name for f in dataclasses.fields(cls)}, kind
    caption_fields = {f.name for f in dataclasses.fields(wire.Caption)} - {"type", "fallback_reason"}
    assert set(definitions["caption"]["properties"]) == caption_fields
    assert definitions["error"]["properties"]["code"]["enum"] == [str(code) for code in ErrorCode]
    assert definitions["sample_rate_hz"]["enum"] == list(wire.SAMPLE_RATES_HZ)
    assert definitions["sample_format"]["enum"] == list(wire.SAMPLE_FORMATS)


def test_every_message_validates_against_the_schema(schema):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(schema)
    for message in _client_messages() + _server_messages():
        validator.validate(json.loads(wire.encode(message)))
    for bad in ({"type": "start", "source": "en"}, {"type": "partial", "segment_id": 1}, {"type": "stop", "x": 1}):
        assert not validator.is_valid(bad), bad
