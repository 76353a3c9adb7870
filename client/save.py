"""Saving finished captions as they arrive: SRT, WebVTT or JSON Lines, chosen by the file's suffix.

Each final is written and flushed the moment it arrives, so an interrupted session keeps every
caption it showed. Segments that came to nothing (empty finals) are not written.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Protocol, TextIO

from streamst import subtitles, wire
from streamst.client.errors import ClientError
from streamst.client.stream import caption_event
from streamst.types import FinalEvent

log = logging.getLogger("streamst.client.save")

FORMATS = (".srt", ".vtt", ".jsonl")


class CaptionWriter(Protocol):
    path: Path

    def write(self, caption: wire.Caption) -> None:
        """Writes one final (partials are ignored) and flushes it."""

    def close(self) -> None: ...


def open_writer(path: str | Path, source: str = "", target: str = "") -> CaptionWriter:
    """A writer for `path`, by its suffix; the file is created (or emptied) now."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ClientError(f"cannot save captions to {path}: the name must end in {', '.join(FORMATS)}")
    try:
        file = path.open("w", encoding="utf-8", newline="\n")
    except OSError as e:
        raise ClientError(f"cannot write {path}: {e.strerror or e}; check the folder exists and is writable") from e
    if suffix == ".srt":
        return SrtWriter(path, file)
    if suffix == ".vtt":
        return VttWriter(path, file)
    return JsonlWriter(path, file, source, target)


class _Writer(ABC):
    def __init__(self, path: Path, file: TextIO) -> None:
        self.path = path
        self.file = file
        self.n_written = 0

    def write(self, caption: wire.Caption) -> None:
        if caption.type != "final" or not caption.committed_text:
            return
        self.n_written += 1
        self.file.write(self._format(caption))
        self.file.flush()

    @abstractmethod
    def _format(self, caption: wire.Caption) -> str:
        """The text one final adds to the file."""

    def close(self) -> None:
        self.file.close()


class SrtWriter(_Writer):
    def _format(self, caption: wire.Caption) -> str:
        return subtitles.srt_cue(self.n_written, _final_event(caption))


class VttWriter(_Writer):
    def __init__(self, path: Path, file: TextIO) -> None:
        super().__init__(path, file)
        file.write(subtitles.VTT_HEADER)
        file.flush()

    def _format(self, caption: wire.Caption) -> str:
        return subtitles.vtt_cue(_final_event(caption))


class JsonlWriter(_Writer):
    """One JSON object per finished segment: index, segment, times, text, source text, mode."""

    def __init__(self, path: Path, file: TextIO, source: str, target: str) -> None:
        super().__init__(path, file)
        self.source = source
        self.target = target

    def _format(self, caption: wire.Caption) -> str:
        record = {
            "index": self.n_written,
            "segment_id": caption.segment_id,
            "start_ms": caption.start_ms,
            "end_ms": caption.end_ms,
            "text": caption.committed_text,
            "source_text": caption.source_text,
            "source": self.source,
            "target": self.target,
            "mode": caption.mode,
            "fallback_reason": caption.fallback_reason,
        }
        return json.dumps(record, ensure_ascii=False) + "\n"


def _final_event(caption: wire.Caption) -> FinalEvent:
    """The library's record of a final, which `streamst.subtitles` formats."""
    event = caption_event(caption)
    if not isinstance(event, FinalEvent):
        raise ValueError(f"segment {caption.segment_id}: a {caption.type} caption is not a final")
    return event
