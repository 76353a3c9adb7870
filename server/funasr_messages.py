"""FunASR's WebSocket messages, as its clients (funasr_wss_client.py, the HTML5 page, the Java, C#
and Go clients) send and read them: parsing their JSON and rendering our events for them.

Pure: no sockets, no models. The rules the clients rely on:
- `2pass-online` messages carry only newly committed text; clients append them, so nothing sent
  there is ever taken back;
- `2pass-offline` carries a whole segment; clients replace the online text since the last offline
  message with it, and append it to what they show;
- every message has `mode` and `text` (older clients index both unconditionally);
- no `timestamp` (the HTML5 client indexes it per character of the text and breaks on a mismatch);
- the end acknowledgement is `{"is_final": true, "is_end": true}`;
- our additions (`source_text`, `segment_id`, `error`, `error_code`) are extra keys clients ignore.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamst import wire
from streamst.types import Event, FinalEvent
from streamst.wire import ErrorCode, ProtocolError

MODES = ("2pass", "online", "offline")
DEFAULT_MODE = "2pass"
DEFAULT_WAV_NAME = "demo"
DEFAULT_AUDIO_FS = 16_000
PCM_FORMATS = ("pcm", "wav")  # "wav" (or the HTML5 page's "PCM" for a wav file): PCM after a RIFF header
AUTO_LANGUAGE = "auto"
RIFF_MAGIC = b"RIFF"
WAV_HEADER_MAX_BYTES = 4096  # a RIFF header at the start of the audio must end within this many bytes
N_BYTES_PCM16 = 2


@dataclass(frozen=True)
class FunasrConfig:
    """The first message of a FunASR client, plus our optional language fields."""

    mode: str = DEFAULT_MODE  # "2pass", "online" or "offline"
    wav_name: str = DEFAULT_WAV_NAME
    is_speaking: bool = True
    audio_fs: int = DEFAULT_AUDIO_FS  # sample rate of the PCM16 frames
    wav_format: str = "pcm"
    source: str | None = None  # `source_lang`, or SenseVoice's `svs_lang` unless "auto"
    target: str | None = None  # `target_lang`


def parse_json(text: str) -> dict[str, Any]:
    """A client's text frame as a JSON object; anything else is ProtocolError(BAD_JSON), as in the
    native protocol (`wire.parse_json` says what was wrong)."""
    data = wire.parse_json(text)
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, "a text frame must hold a JSON object")
    return data


def parse_config(data: dict[str, Any], previous: FunasrConfig | None = None) -> FunasrConfig:
    """A client's JSON message → its configuration; fields it leaves out keep their previous values."""
    base = previous or FunasrConfig()
    mode = str(data.get("mode", base.mode))
    if mode not in MODES:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_MODE, f"mode {mode!r} is not a FunASR mode; use one of: {', '.join(MODES)}"
        )
    audio_fs = data.get("audio_fs", base.audio_fs)
    if not isinstance(audio_fs, int) or isinstance(audio_fs, bool) or audio_fs <= 0:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_SAMPLE_RATE, f"audio_fs must be a sample rate in Hz, got {audio_fs!r}"
        )
    wav_format = str(data.get("wav_format", base.wav_format)).lower()
    if wav_format not in PCM_FORMATS:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_SAMPLE_FORMAT,
            f"wav_format {wav_format!r} is not supported; send 16-bit PCM (wav_format 'pcm' or 'wav')",
        )
    return FunasrConfig(
        mode=mode,
        wav_name=str(data.get("wav_name", base.wav_name)),
        is_speaking=bool(data.get("is_speaking", base.is_speaking)),
        audio_fs=audio_fs,
        wav_format=wav_format,
        source=_language(data, ("source_lang", "svs_lang"), base.source),
        target=_language(data, ("target_lang",), base.target),
    )


def is_end_of_speech(data: dict[str, Any]) -> bool:
    return data.get("is_speaking") is False or data.get("is_end") is True


def _language(data: dict[str, Any], keys: tuple[str, ...], default: str | None) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip() and value.strip().lower() != AUTO_LANGUAGE:
            return value.strip()
    return default


class FunasrRenderer:
    """Turns engine events into FunASR messages for one stream; keeps what the client has appended."""

    def __init__(self, mode: str, wav_name: str, space_separated: bool) -> None:
        self.mode = mode
        self.wav_name = wav_name
        self.space_separated = space_separated  # the target puts spaces between words
        self._shown_text = ""  # the finished segments' text as the client shows it, for separators
        self._separators: dict[int, str] = {}  # per segment: what goes before its text
        self._offline_texts: list[str] = []  # offline mode: segments waiting for the end

    def render(self, event: Event) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if self.mode in ("2pass", "online") and (event.committed_delta or (self.mode == "2pass" and event.source_text)):
            messages.append(self._online(event))
        if isinstance(event, FinalEvent) and event.committed_text:
            text = self._separator(event) + event.committed_text
            self._shown_text += text
            if self.mode == "2pass":
                messages.append(self._message("2pass-offline", text, True, event))
            elif self.mode == "offline":
                self._offline_texts.append(text)
        return messages

    def end(self) -> list[dict[str, Any]]:
        """The last messages: offline mode's whole text, then the end acknowledgement."""
        return [*self._collected(), {**self._message(self._closing_mode, "", True), "is_end": True}]

    def error(self, error: ProtocolError) -> list[dict[str, Any]]:
        """What was translated (offline mode's text), then an error in the end acknowledgement's
        shape, which the newer Python client reports."""
        message = self._message(self._closing_mode, "", False)
        return [*self._collected(), {**message, "is_end": True, "error": str(error), "error_code": str(error.code)}]

    def _collected(self) -> list[dict[str, Any]]:
        if self.mode == "offline" and self._offline_texts:
            return [self._message("offline", "".join(self._offline_texts), False)]
        return []

    @property
    def _closing_mode(self) -> str:
        return "2pass-offline" if self.mode == "2pass" else self.mode

    def _online(self, event: Event) -> dict[str, Any]:
        delta = event.committed_delta
        if delta and event.segment_id not in self._separators:
            delta = self._separator(event) + delta
        mode = "2pass-online" if self.mode == "2pass" else "online"
        return self._message(mode, delta, False, event)

    def _separator(self, event: Event) -> str:
        """A space before a segment's text when words are space-separated and text came before it."""
        if event.segment_id not in self._separators:
            needs_space = (
                self.space_separated
                and self._shown_text
                and not self._shown_text[-1].isspace()
                and not event.committed_text[:1].isspace()
            )
            self._separators[event.segment_id] = " " if needs_space else ""
        return self._separators[event.segment_id]

    def _message(self, mode: str, text: str, is_final: bool, event: Event | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"mode": mode, "text": text, "wav_name": self.wav_name, "is_final": is_final}
        if event is not None:
            message["source_text"] = event.source_text
            message["segment_id"] = event.segment_id
        return message


class PcmReader:
    """PCM16 bytes from a FunASR client's binary frames, made whole: a RIFF header at the start of
    the stream (the HTML5 page sends wav files as they are) is skipped, and a sample split across
    two frames is joined."""

    def __init__(self) -> None:
        self._head = b""  # the first bytes, until it is clear whether a RIFF header starts them
        self._in_header = True
        self._odd_byte = b""

    def read(self, data: bytes) -> bytes:
        """The whole samples `data` completes; b"" while the start of the stream is undecided."""
        pcm = self._skip_header(self._odd_byte + data)
        cut = len(pcm) - len(pcm) % N_BYTES_PCM16
        self._odd_byte = pcm[cut:]
        return pcm[:cut]

    def _skip_header(self, data: bytes) -> bytes:
        if not self._in_header:
            return data
        self._head += data
        if len(self._head) < len(RIFF_MAGIC) and RIFF_MAGIC.startswith(self._head):
            return b""
        if not self._head.startswith(RIFF_MAGIC):
            return self._leave_header(0)
        data_at = self._head.find(b"data", 12)
        if data_at >= 0 and len(self._head) >= data_at + 8:
            return self._leave_header(data_at + 8)
        if len(self._head) > WAV_HEADER_MAX_BYTES:
            raise ProtocolError(
                ErrorCode.BAD_AUDIO, "the audio starts with 'RIFF' but holds no WAV data chunk; send PCM"
            )
        return b""

    def _leave_header(self, offset: int) -> bytes:
        self._in_header = False
        rest, self._head = self._head[offset:], b""
        return rest
