"""The native WebSocket protocol, version 1: every message, its JSON form, and its validation.

Sans-I/O: this module builds and parses messages and checks audio frame sizes; it never touches a
socket or a model. The server and the clients both use it, so the protocol lives in one place.
`docs/protocol.md` describes the conversation and `docs/protocol.schema.json` the messages.

    client                                   server
      {"type": "start", ...}        ──▶
                                    ◀──      {"type": "ready", ...}
      binary audio frames (any size) ──▶
                                    ◀──      {"type": "partial", ...} / {"type": "final", ...}
      {"type": "stop"}              ──▶
                                    ◀──      remaining finals, then {"type": "end", ...}; close 1000

Any problem is an {"type": "error", "code": ..., "message": ...}; a fatal one is followed by `end` and
a close frame whose code `close_code(code)` gives.
"""

from __future__ import annotations

import difflib
import enum
import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from streamst.errors import StreamstError
from streamst.types import Event, FinalEvent

PROTOCOL_VERSION = 1
STREAM_PATH = f"/v{PROTOCOL_VERSION}/stream"
ROOMS_PATH = f"/v{PROTOCOL_VERSION}/rooms"  # POST creates a room; GET ROOMS_PATH/{id} gives its counters
NEW_ROOM = "new"  # `start.room` that creates a room for this stream


def captions_path(room_id: str) -> str:
    """Where a room's listeners connect (receive-only): add ?target=LANG&key=READ_KEY."""
    return f"{ROOMS_PATH}/{room_id}/captions"


def viewer_path(room_id: str) -> str:
    """The room's caption page for people: add ?key=READ_KEY."""
    return f"/room/{room_id}"

SampleFormat = Literal["pcm16", "float32"]
BYTES_PER_SAMPLE: dict[str, int] = {"pcm16": 2, "float32": 4}
SAMPLE_FORMATS: tuple[str, ...] = tuple(BYTES_PER_SAMPLE)
SAMPLE_RATES_HZ: tuple[int, ...] = (8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000, 96_000)
"""Input rates the server resamples from; 16 kHz needs no resampling."""
DEFAULT_SAMPLE_RATE_HZ = 16_000
DEFAULT_SAMPLE_FORMAT: SampleFormat = "pcm16"


class ErrorCode(enum.StrEnum):
    """Stable error codes. Clients branch on the code; the message is for people."""

    BAD_JSON = "bad_json"  # a text frame is not a JSON object
    BAD_MESSAGE = "bad_message"  # a JSON message has an unknown type, a missing field or a wrong value
    UNSUPPORTED_VERSION = "unsupported_version"  # `start.version` is not one this server speaks
    NOT_STARTED = "not_started"  # audio or `stop` before `start`
    ALREADY_STARTED = "already_started"  # a second `start`; ignored, the session goes on
    UNSUPPORTED_LANGUAGE = "unsupported_language"  # a language is unknown, or the pair cannot be served
    UNSUPPORTED_SAMPLE_RATE = "unsupported_sample_rate"
    UNSUPPORTED_SAMPLE_FORMAT = "unsupported_sample_format"
    UNSUPPORTED_MODE = "unsupported_mode"
    UNSUPPORTED_POLICY = "unsupported_policy"
    BAD_OPTION = "bad_option"  # the latency knob (or another option) is out of range
    BAD_AUDIO = "bad_audio"  # a frame does not hold whole samples, or holds NaN/infinite floats
    FRAME_TOO_LARGE = "frame_too_large"
    SESSION_TOO_LONG = "session_too_long"  # the session reached the server's maximum length
    IDLE_TIMEOUT = "idle_timeout"  # nothing arrived for the server's idle timeout
    TOO_SLOW = "too_slow"  # the client does not read what the server sends
    OVERLOADED = "overloaded"  # the server fell too far behind this stream's audio
    FINISH_TIMEOUT = "finish_timeout"  # the last segments could not be finished in time: their translation is incomplete
    SERVER_BUSY = "server_busy"  # every session slot is taken (HTTP 503 at the handshake)
    UNAUTHORIZED = "unauthorized"  # missing or wrong token (HTTP 401 at the handshake)
    FORBIDDEN_ORIGIN = "forbidden_origin"  # the page's origin is not allowed (HTTP 403 at the handshake)
    SHUTTING_DOWN = "shutting_down"  # the server is stopping (HTTP 503 at the handshake)
    UNKNOWN_ROOM = "unknown_room"  # no room has that id (it never existed, or it has ended)
    ROOM_FULL = "room_full"  # the room has its most listeners, or languages (HTTP 503 at the handshake)
    FORBIDDEN = "forbidden"  # the key does not allow this (a read key to speak, a wrong key, a listener's audio)
    ENGINE_ERROR = "engine_error"  # the engine rejected the stream (its message says why)
    INTERNAL_ERROR = "internal_error"  # a bug in the server; the log has the details


CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013

_CLOSE_CODES: dict[ErrorCode, int] = {
    ErrorCode.BAD_AUDIO: CLOSE_UNSUPPORTED_DATA,
    ErrorCode.UNSUPPORTED_SAMPLE_RATE: CLOSE_UNSUPPORTED_DATA,
    ErrorCode.UNSUPPORTED_SAMPLE_FORMAT: CLOSE_UNSUPPORTED_DATA,
    ErrorCode.FRAME_TOO_LARGE: CLOSE_MESSAGE_TOO_BIG,
    ErrorCode.SESSION_TOO_LONG: CLOSE_NORMAL,
    ErrorCode.IDLE_TIMEOUT: CLOSE_NORMAL,
    ErrorCode.OVERLOADED: CLOSE_TRY_AGAIN_LATER,
    ErrorCode.FINISH_TIMEOUT: CLOSE_TRY_AGAIN_LATER,
    ErrorCode.SERVER_BUSY: CLOSE_TRY_AGAIN_LATER,
    ErrorCode.ROOM_FULL: CLOSE_TRY_AGAIN_LATER,
    ErrorCode.SHUTTING_DOWN: CLOSE_GOING_AWAY,
    ErrorCode.ENGINE_ERROR: CLOSE_INTERNAL_ERROR,
    ErrorCode.INTERNAL_ERROR: CLOSE_INTERNAL_ERROR,
}


def close_code(code: ErrorCode) -> int:
    """The WebSocket close code that follows a fatal error with this code (1008 unless listed)."""
    return _CLOSE_CODES.get(code, CLOSE_POLICY_VIOLATION)


class ProtocolError(StreamstError):
    """A message or frame breaks the protocol; `code` is the stable error code to send back."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code

    def to_message(self, fatal: bool = True) -> Error:
        return Error(code=self.code, message=str(self), fatal=fatal)


# Client → server ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Opens the stream: what is spoken, what to translate into, and how audio is encoded."""

    source: str  # spoken language: a code or name the server resolves ("en", "zh", "German")
    target: str  # caption language
    sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ  # rate of the binary frames; one of SAMPLE_RATES_HZ
    sample_format: SampleFormat = DEFAULT_SAMPLE_FORMAT  # "pcm16" (s16le) or "float32" (f32le), mono
    mode: str | None = None  # "direct", "cascade" (GET /v1/status lists them); None: the server's default
    policy: str | None = None  # when the mode commits ("la", "wait-k", "sentence", ...); None: the mode's default
    knob: float | None = None  # the policy's latency knob (la: n, sentence: step_ms, ...); None: its default
    step_ms: int | None = None  # new audio that triggers the next step; None: the mode's (cascade/sentence: the knob)
    version: int = PROTOCOL_VERSION
    room: str | None = None  # speak into a room: an id from POST /v1/rooms, or NEW_ROOM for a room of this stream
    room_key: str | None = None  # the room's speak key (from POST /v1/rooms); not needed with NEW_ROOM
    type: Literal["start"] = "start"


@dataclass(frozen=True)
class Stop:
    """No more audio: the server finishes open segments, sends their finals, then `end`."""

    type: Literal["stop"] = "stop"


ClientMessage = Start | Stop


# Server → client ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """The stream is open; audio may follow. Echoes the settings the server resolved."""

    session_id: str
    source: str  # resolved language codes
    target: str
    sample_rate_hz: int
    sample_format: SampleFormat
    mode: str
    policy: str | None  # the policy in force, default filled in (this server always sets it)
    knob: float | None  # the policy's knob in force, default filled in (this server always sets it)
    step_ms: int
    max_frame_bytes: int  # larger binary frames are refused
    max_session_s: float  # audio the session may send in all
    idle_timeout_s: float  # silence on the socket (no frame at all) that ends the session
    version: int = PROTOCOL_VERSION
    room_id: str | None = None  # when speaking into a room: its id (sent only then)
    read_key: str | None = None  # when speaking into a room: the key its listeners need (sent only then)
    type: Literal["ready"] = "ready"


@dataclass(frozen=True)
class Caption:
    """One update of a segment's captions (`partial`) or its last word (`final`).

    Within a segment `committed_text` only grows: each message's `committed_delta` is the text
    appended since the previous message of the same segment. `tentative_text` may change at will.
    """

    type: Literal["partial", "final"]
    segment_id: int  # increases by one per final
    committed_text: str  # target text committed so far in this segment; never retracted
    committed_delta: str  # target text newly committed by this message
    tentative_text: str  # target tail that may still change ("" in a final)
    source_text: str  # source transcript of the segment so far
    start_ms: int  # segment start on the stream's audio timeline
    end_ms: int  # segment end, or audio heard so far while it is open
    mode: str  # the path that produced it ("cascade", "direct")
    audio_ms: int  # stream audio the server had consumed when it produced this message
    fallback_reason: str = ""  # in a final: why the cascade finished a segment the direct path began


@dataclass(frozen=True)
class Error:
    """Something went wrong. `fatal` errors end the session: `end` and a close frame follow."""

    code: ErrorCode
    message: str  # says what was wrong and how to fix it
    fatal: bool = True
    type: Literal["error"] = "error"


@dataclass(frozen=True)
class Joined:
    """A listener's first message: the room it reads, then `n_history` finals of what was said
    before it joined (the room's recent committed text), then live `partial`/`final` messages."""

    room_id: str
    target: str  # the caption language, resolved
    source: str | None  # the spoken language; None until the speaker has started
    n_history: int  # finals that follow at once, from before the listener joined
    version: int = PROTOCOL_VERSION
    type: Literal["joined"] = "joined"


EndReason = Literal["stop", "error", "shutdown"]


@dataclass(frozen=True)
class End:
    """The last message of a session; the server closes the connection after it."""

    reason: EndReason  # "stop" after the client's stop, "error" after a fatal error, "shutdown"
    audio_ms: int  # stream audio the server consumed
    n_segments: int  # finals sent
    type: Literal["end"] = "end"


ServerMessage = Ready | Joined | Caption | Error | End
Message = ClientMessage | ServerMessage


def caption(event: Event) -> Caption:
    """The wire form of an engine event."""
    return Caption(
        type=event.kind,
        segment_id=event.segment_id,
        committed_text=event.committed_text,
        committed_delta=event.committed_delta,
        tentative_text=event.tentative_text,
        source_text=event.source_text,
        start_ms=event.start_ms,
        end_ms=event.end_ms,
        mode=event.mode,
        audio_ms=event.audio_ms,
        fallback_reason=event.fallback_reason if isinstance(event, FinalEvent) else "",
    )


def encode(message: Message) -> str:
    """One message as the JSON text frame that carries it (UTF-8, no ASCII escaping)."""
    return json.dumps(_as_dict(message), ensure_ascii=False, separators=(",", ":"))


def _as_dict(message: Message) -> dict[str, Any]:
    data = asdict(message)
    if isinstance(message, Error):
        data["code"] = str(message.code)
    if isinstance(message, Caption) and message.type == "partial":
        del data["fallback_reason"]
    if isinstance(message, Ready) and message.room_id is None:
        del data["room_id"], data["read_key"]
    if isinstance(message, Start) and message.room is None:
        del data["room"], data["room_key"]  # a plain start reads as before, to servers without rooms too
    return data


# Parsing -------------------------------------------------------------------------------------------

_CLIENT_TYPES: dict[str, type] = {"start": Start, "stop": Stop}
_SERVER_TYPES: dict[str, type] = {
    "ready": Ready, "joined": Joined, "partial": Caption, "final": Caption, "error": Error, "end": End,
}


def parse_client_message(text: str | bytes) -> ClientMessage:
    """A client's text frame → `Start` or `Stop`. Raises ProtocolError with the code to send back."""
    data = _json_object(text)
    kind = _message_type(data, _CLIENT_TYPES)
    if kind == "stop":
        _reject_unknown_fields(data, Stop)
        return Stop()
    return _parse_start(data)


def parse_server_message(text: str | bytes) -> ServerMessage:
    """A server's text frame → `Ready`, `Joined`, `Caption`, `Error` or `End` (for clients and tests)."""
    data = _json_object(text)
    kind = _message_type(data, _SERVER_TYPES)
    cls = _SERVER_TYPES[kind]
    known = {f.name for f in fields(cls)}
    values = {k: v for k, v in data.items() if k in known}
    if cls is Error:
        values["code"] = _error_code(values.get("code"))
    try:
        return cls(**values)
    except TypeError as e:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"malformed {kind!r} message: {e}") from e


def _error_code(value: Any) -> ErrorCode | str:
    try:
        return ErrorCode(value)
    except ValueError:
        return str(value)  # a code from a newer server


MAX_JSON_DIGITS = 100  # longest whole number a text frame may hold; no field needs more, no float holds 309


def parse_json(text: str | bytes) -> Any:
    """A text frame's JSON value. Every way it can be unreadable raises ProtocolError(BAD_JSON) with
    what was wrong: not JSON, nested too deeply for the parser, a whole number over MAX_JSON_DIGITS
    digits, or a string with a lone surrogate escape (which no UTF-8 text can carry back)."""
    try:
        data = json.loads(text, parse_int=_whole_number)
        json.dumps(data, ensure_ascii=False).encode("utf-8")  # "\ud800" loads, but no UTF-8 reply can echo it
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProtocolError(
            ErrorCode.BAD_JSON, f"a text frame is not valid JSON ({e}); send one JSON object per text frame"
        ) from e
    except RecursionError as e:
        raise ProtocolError(
            ErrorCode.BAD_JSON, "a text frame nests JSON arrays or objects too deeply to read; send a flat JSON object"
        ) from e
    except UnicodeEncodeError as e:
        raise ProtocolError(
            ErrorCode.BAD_JSON,
            f"a text frame holds a lone surrogate escape (\\u{ord(e.object[e.start]):04x}) in a string; "
            "escape a character beyond U+FFFF as a surrogate pair, or send it as UTF-8",
        ) from e
    return data


def _whole_number(digits: str) -> int:
    """`json.loads`' `parse_int`: refuses a number too long for any field before converting it."""
    n_digits = len(digits.lstrip("-"))
    if n_digits > MAX_JSON_DIGITS:
        raise ProtocolError(
            ErrorCode.BAD_JSON,
            f"a text frame holds a whole number of {n_digits} digits; numbers in messages have at most "
            f"{MAX_JSON_DIGITS}",
        )
    return int(digits)


def _json_object(text: str | bytes) -> dict[str, Any]:
    data = parse_json(text)
    if not isinstance(data, dict):
        raise ProtocolError(
            ErrorCode.BAD_JSON, f"a text frame holds a JSON {type(data).__name__}; send a JSON object with a 'type'"
        )
    return data


def _message_type(data: dict[str, Any], types: dict[str, type]) -> str:
    kind = data.get("type")
    if kind not in types:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, f"unknown message type {kind!r}; expected one of: {', '.join(types)}"
        )
    return kind


def _reject_unknown_fields(data: dict[str, Any], cls: type) -> None:
    known = [f.name for f in fields(cls)]
    for key in data:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; known fields: {', '.join(known)}"
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"unknown field {key!r} in {data['type']!r}{suggestion}")


def _parse_start(data: dict[str, Any]) -> Start:
    _reject_unknown_fields(data, Start)
    version = _field(data, "version", int, PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {version} is not supported; this server speaks version {PROTOCOL_VERSION} "
            f"at {STREAM_PATH}",
        )
    source = _language(data, "source")
    target = _language(data, "target")
    sample_rate_hz = _field(data, "sample_rate_hz", int, DEFAULT_SAMPLE_RATE_HZ)
    if sample_rate_hz not in SAMPLE_RATES_HZ:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_SAMPLE_RATE,
            f"sample_rate_hz {sample_rate_hz} is not supported; use one of "
            f"{', '.join(map(str, SAMPLE_RATES_HZ))} (16000 needs no resampling)",
        )
    sample_format = _field(data, "sample_format", str, DEFAULT_SAMPLE_FORMAT)
    if sample_format not in SAMPLE_FORMATS:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_SAMPLE_FORMAT,
            f"sample_format {sample_format!r} is not supported; use 'pcm16' (signed 16-bit little-endian) "
            "or 'float32' (32-bit float little-endian), mono",
        )
    mode = _field(data, "mode", str, None)
    policy = _field(data, "policy", str, None)
    knob = _field(data, "knob", float, None)
    if knob is not None and not math.isfinite(knob):
        raise ProtocolError(ErrorCode.BAD_OPTION, f"knob must be a finite number, got {knob!r}")
    step_ms = _field(data, "step_ms", int, None)
    room = _field(data, "room", str, None)
    room_key = _field(data, "room_key", str, None)
    if room_key is not None and room is None:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            "'room_key' without 'room'; give the room's id as 'room' too (or leave both out to stream alone)",
        )
    return Start(source, target, sample_rate_hz, sample_format, mode, policy, knob, step_ms, version, room, room_key)


def _language(data: dict[str, Any], name: str) -> str:
    value = _field(data, name, str, None)
    if value is None or not value.strip():
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f'\'start\' needs a {name!r} language, such as "en", "zh" or "de"')
    return value.strip()


_TYPE_NAMES = {int: "a whole number", float: "a number", str: "a string"}


def _field(data: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    """A field of the expected JSON type; missing or null gives `default`. Booleans are not numbers."""
    value = data.get(name)
    if value is None:
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, f"{name!r} must be {_TYPE_NAMES[kind]}, got {json.dumps(value, ensure_ascii=False)}"
        )
    return value


# Audio frames ---------------------------------------------------------------------------------------


def check_frame(n_bytes: int, sample_format: str, max_frame_bytes: int) -> int:
    """Validates a binary frame's size; returns its number of samples.

    Raises ProtocolError(FRAME_TOO_LARGE) above `max_frame_bytes` and ProtocolError(BAD_AUDIO) when
    the bytes do not make whole samples (an odd count for pcm16, not a multiple of 4 for float32).
    """
    if n_bytes > max_frame_bytes:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE,
            f"an audio frame of {n_bytes} bytes exceeds the limit of {max_frame_bytes} bytes; "
            "send audio in smaller frames (20–200 ms each is typical)",
        )
    n_bytes_per_sample = BYTES_PER_SAMPLE[sample_format]
    if n_bytes % n_bytes_per_sample:
        raise ProtocolError(
            ErrorCode.BAD_AUDIO,
            f"an audio frame of {n_bytes} bytes does not hold whole {sample_format} samples "
            f"({n_bytes_per_sample} bytes each); never split a sample across frames",
        )
    return n_bytes // n_bytes_per_sample
