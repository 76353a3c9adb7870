"""SRT and WebVTT cues from final events, written as they arrive."""

from __future__ import annotations

from streamst.types import FinalEvent

VTT_HEADER = "WEBVTT\n\n"


def _timestamp(ms: int, decimal: str) -> str:
    ms = max(0, int(ms))
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{decimal}{millis:03d}"


def srt_cue(index: int, event: FinalEvent) -> str:
    """One SRT block; `index` counts from 1."""
    start, end = _timestamp(event.start_ms, ","), _timestamp(max(event.end_ms, event.start_ms + 1), ",")
    return f"{index}\n{start} --> {end}\n{event.committed_text}\n\n"


def vtt_cue(event: FinalEvent) -> str:
    start, end = _timestamp(event.start_ms, "."), _timestamp(max(event.end_ms, event.start_ms + 1), ".")
    return f"{start} --> {end}\n{event.committed_text}\n\n"
