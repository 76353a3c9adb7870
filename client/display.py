"""Captions on the terminal.

`TtyDisplay` (stdout is a terminal): finished segments scroll up as lines; below them the open
segment is redrawn in place, its committed text in full colour and its tentative tail dimmed
(optionally with the source transcript), and a status line at the bottom shows the connection, how
far behind the last commit was, and an input level meter.

`PlainDisplay` (stdout is a pipe or a file): one line per finished segment on stdout and a line per
connection change on stderr (from the first `ready` on); no escape sequences, nothing redrawn.
"""

from __future__ import annotations

import logging
import math
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TextIO

from streamst import wire
from streamst.client.connection import State, Status

PROGRAM = "streamst-mic"
MAX_LIVE_LINES = 6  # the open segment shows its last lines beyond this
N_METER_CELLS = 10
BUFFERED_SHOWN_MS = 1000  # unsent audio below this is normal and not shown
OVERRUN_NOTE_INTERVAL_S = 5.0  # plain output reports new overruns at most this often

RESET = "\x1b[0m"
BOLD = "\x1b[1m"
DIM = "\x1b[2m"
CYAN = "\x1b[36m"
GREEN = "\x1b[32m"
YELLOW = "\x1b[33m"
RED = "\x1b[31m"
CLEAR_TO_END = "\x1b[J"
HIDE_CURSOR = "\x1b[?25l"
SHOW_CURSOR = "\x1b[?25h"


@dataclass(frozen=True)
class Snapshot:
    """Everything the status line shows, taken when it is drawn."""

    status: Status
    languages: str  # "en→zh"
    level_dbfs: float  # input level (-inf for silence)
    level_fraction: float  # the same as 0…1 for the meter
    n_overruns: int  # audio blocks lost by the capture
    stopping: bool = False  # the person asked to stop (Ctrl-C) or the file ended
    listening: bool = False  # following a room (--listen): no microphone, so no level meter


class Display(Protocol):
    def on_caption(self, caption: wire.Caption) -> None: ...

    def on_status(self, status: Status) -> None: ...

    def note(self, text: str) -> None:
        """A message for the person (a warning, a hint), shown above the captions or on stderr."""

    def refresh(self) -> None:
        """Called a few times a second: redraw the meter and the status line."""

    def close(self, summary: str) -> None:
        """The last words: the live area is cleared and `summary` printed."""


# text measuring and wrapping ------------------------------------------------------------------------


def cell_width(text: str) -> int:
    """Terminal columns `text` takes: East Asian wide and full-width characters take two."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


_TOKENS = re.compile(r"\S+\s*|\s+")

Span = tuple[str, str]  # (escape sequence that styles it, text)


def wrap_spans(spans: list[Span], width: int) -> list[list[Span]]:
    """Greedy word wrap of styled text into lines of at most `width` columns. Words longer than a
    line (and text without spaces, such as Chinese) are broken between characters."""
    width = max(1, width)
    lines: list[list[Span]] = [[]]
    used = 0
    for style, text in spans:
        for token in _TOKENS.findall(text):
            token_width = cell_width(token.rstrip())
            if used and used + token_width > width:
                lines.append([])
                used = 0
                token = token.lstrip()
            for piece in _break(token, width - used, width):
                if used and used + cell_width(piece.rstrip()) > width:
                    lines.append([])
                    used = 0
                lines[-1].append((style, piece))
                used += cell_width(piece)
    return lines


def _break(token: str, first_width: int, width: int) -> list[str]:
    """`token` in pieces that fit: the first in `first_width` columns, the rest in `width`."""
    if cell_width(token.rstrip()) <= first_width:
        return [token]
    pieces, piece, used, limit = [], "", 0, max(1, first_width)
    for char in token:
        char_width = cell_width(char)
        if used + char_width > limit and piece:
            pieces.append(piece)
            piece, used, limit = "", 0, width
        piece += char
        used += char_width
    return [*pieces, piece] if piece else pieces


def fit(text: str, width: int) -> str:
    """`text` cut to `width` columns, with '…' when cut."""
    if cell_width(text) <= width:
        return text
    out, used = "", 0
    for char in text:
        if used + cell_width(char) > width - 1:
            break
        out += char
        used += cell_width(char)
    return out + "…"


# status text ---------------------------------------------------------------------------------------


def status_text(snapshot: Snapshot, now_s: float | None = None, meter: str = "") -> tuple[str, str]:
    """(state word, the rest) of the status line, without escape sequences; what matters most first,
    so that a narrow terminal cuts the least useful part."""
    status = snapshot.status
    now_s = time.monotonic() if now_s is None else now_s
    parts = [] if snapshot.stopping or snapshot.listening else [meter]
    if snapshot.n_overruns:
        parts.append(f"{snapshot.n_overruns} overrun{'s' if snapshot.n_overruns != 1 else ''}")
    if status.dropped_ms:
        parts.append(f"{status.dropped_ms / 1000:.1f} s of audio lost")
    if snapshot.stopping and status.state not in (State.STOPPED, State.RECONNECTING):
        word = "stopping"
        parts.append("waiting for the last captions (Ctrl-C again to quit)")
    elif status.state == State.CONNECTED:
        word = "connected"
        parts.append(f"{snapshot.languages} {status.mode}".strip())
        if status.commit_lag_s is not None:
            parts.append(f"last commit {status.commit_lag_s:.1f} s behind")
    elif status.state == State.RECONNECTING:
        word = "reconnecting"
        wait = ""
        if status.retry_at_s is not None:
            wait = f", next try in {max(0.0, status.retry_at_s - now_s):.0f} s"
        parts.append(f"attempt {status.attempt}{wait}")
        parts.append(status.detail)
    elif status.state == State.WAITING:
        word = "connected"
        parts.append(status.detail)
    else:
        word = status.state.value
    if status.buffered_ms >= BUFFERED_SHOWN_MS:
        parts.append(f"{status.buffered_ms / 1000:.1f} s of audio buffered")
    parts.append(status.server)
    return word, " · ".join(p for p in parts if p)


def meter_text(snapshot: Snapshot, full: str = "█", empty: str = "░") -> str:
    n_full = round(snapshot.level_fraction * N_METER_CELLS)
    level = f"{snapshot.level_dbfs:.0f} dB" if snapshot.level_fraction > 0 else "silent"
    return f"in {full * n_full}{empty * (N_METER_CELLS - n_full)} {level}"


# the terminal ----------------------------------------------------------------------------------------

_STATE_STYLES = {
    State.CONNECTED: GREEN,
    State.WAITING: YELLOW,
    State.CONNECTING: YELLOW,
    State.RECONNECTING: YELLOW,
    State.STOPPING: YELLOW,
    State.STOPPED: DIM,
}


class TtyDisplay:
    def __init__(
        self,
        out: TextIO,
        snapshot: Callable[[], Snapshot],
        show_source: bool = False,
        columns: Callable[[], int] = lambda: 80,
    ) -> None:
        self.out = out
        self.snapshot = snapshot
        self.show_source = show_source
        self.columns = columns
        self._open: dict[int, wire.Caption] = {}
        self._n_live_lines = 0  # lines of the live area above the status line, as last drawn
        self._last_bottom = ""  # the live area as last drawn
        self._started = False
        self._blocks = _meter_blocks(out)

    def on_caption(self, caption: wire.Caption) -> None:
        finished: list[str] = []
        if caption.type == "final":
            for segment_id in [s for s in self._open if s <= caption.segment_id]:
                del self._open[segment_id]
            finished = self._final_lines(caption)
        else:
            self._open[caption.segment_id] = caption
        self._draw(finished)

    def on_status(self, status: Status) -> None:
        self._draw()

    def note(self, text: str) -> None:
        self._draw([f"{YELLOW}{text}{RESET}"])

    def refresh(self) -> None:
        self._draw()

    def close(self, summary: str) -> None:
        self._draw(status=False)
        self.out.write(f"{summary}\n{SHOW_CURSOR}" if summary else SHOW_CURSOR)
        self.out.flush()

    def _final_lines(self, caption: wire.Caption) -> list[str]:
        if not caption.committed_text:
            return []
        width = self._width()
        lines = []
        if self.show_source and caption.source_text:
            lines += _render(wrap_spans([(CYAN + DIM, caption.source_text)], width))
        return lines + _render(wrap_spans([(BOLD, caption.committed_text)], width))

    def _live_lines(self, width: int) -> list[str]:
        lines: list[str] = []
        for caption in self._open.values():
            if self.show_source and caption.source_text:
                lines += _render(wrap_spans([(CYAN + DIM, caption.source_text)], width))
            spans = [(BOLD, caption.committed_text), (DIM, caption.tentative_text)]
            lines += _render(wrap_spans([s for s in spans if s[1]], width)) if any(t for _, t in spans) else []
        if len(lines) > MAX_LIVE_LINES:
            lines = [f"{DIM}…{RESET}", *lines[-(MAX_LIVE_LINES - 1) :]]
        return lines

    def _status_line(self, width: int) -> str:
        snapshot = self.snapshot()
        word, rest = status_text(snapshot, meter=meter_text(snapshot, *self._blocks))
        style = RED if snapshot.n_overruns or snapshot.status.dropped_ms else _STATE_STYLES[snapshot.status.state]
        text = fit(f"{word} · {rest}" if rest else word, width)
        return f"{style}{text[: len(word)]}{RESET}{DIM}{text[len(word) :]}{RESET}"

    def _width(self) -> int:
        """Columns to fill: one less than the terminal's, so a full line never wraps by itself."""
        return max(10, self.columns() - 1)

    def _draw(self, finished: Sequence[str] = (), status: bool = True) -> None:
        """Rewrites the live area (open segments and the status line) below any `finished` lines."""
        width = self._width()
        live = self._live_lines(width) if status else []
        bottom = "".join(f"{line}\n" for line in live) + (self._status_line(width) if status else "")
        if not finished and status and bottom == self._last_bottom:
            return
        parts = [] if self._started else [HIDE_CURSOR]
        parts.append(f"\r\x1b[{self._n_live_lines}A" if self._n_live_lines else "\r")
        parts.append(CLEAR_TO_END)
        parts += [f"{line}\n" for line in finished]
        parts.append(bottom)
        self.out.write("".join(parts))
        self.out.flush()
        self._started = True
        self._n_live_lines = len(live)
        self._last_bottom = bottom


def _render(lines: list[list[Span]]) -> list[str]:
    """Wrapped lines → strings, one escape sequence per run of equally styled text."""
    rendered = []
    for line in lines:
        runs: list[list[str]] = []
        for style, text in line:
            if runs and runs[-1][0] == style:
                runs[-1][1] += text
            else:
                runs.append([style, text])
        if runs:
            runs[-1][1] = runs[-1][1].rstrip()
        rendered.append("".join(f"{style}{text}{RESET}" for style, text in runs if text))
    return rendered


def _meter_blocks(out: TextIO) -> tuple[str, str]:
    try:
        "█░".encode(out.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return "#", "-"
    return "█", "░"


# plain lines -------------------------------------------------------------------------------------------

QUIET_PLAIN_STATES = (State.CONNECTING, State.WAITING)  # not reported, so that a refusal stays a single line


class PlainDisplay:
    def __init__(self, out: TextIO, err: TextIO, snapshot: Callable[[], Snapshot], show_source: bool = False) -> None:
        self.out = out
        self.err = err
        self.snapshot = snapshot
        self.show_source = show_source
        self._last_status: tuple[State, str, int] | None = None
        self._n_overruns_told = 0
        self._overruns_told_s = -math.inf

    def on_caption(self, caption: wire.Caption) -> None:
        if caption.type != "final" or not caption.committed_text:
            return
        if self.show_source and caption.source_text:
            self.out.write(f"  [{caption.source_text}]\n")
        self.out.write(f"{caption.committed_text}\n")
        self.out.flush()

    def on_status(self, status: Status) -> None:
        key = (status.state, status.detail, status.attempt)
        if key == self._last_status or status.state in QUIET_PLAIN_STATES:
            return
        self._last_status = key
        word, rest = status_text(self.snapshot())
        self.note(f"{word}: {rest}" if rest else word)

    def note(self, text: str) -> None:
        self.err.write(f"{PROGRAM}: {text}\n")
        self.err.flush()

    def refresh(self) -> None:
        snapshot = self.snapshot()
        now_s = time.monotonic()
        if snapshot.n_overruns > self._n_overruns_told and now_s - self._overruns_told_s >= OVERRUN_NOTE_INTERVAL_S:
            self.note(f"warning: {snapshot.n_overruns} audio overrun(s): the capture lost audio blocks")
            self._n_overruns_told = snapshot.n_overruns
            self._overruns_told_s = now_s

    def close(self, summary: str) -> None:
        if summary:
            self.note(summary)


class DisplayLogHandler(logging.Handler):
    """Shows the client's log records through the display, so they do not tear the live area."""

    def __init__(self, display: Display, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.display.note(f"{record.levelname.lower()}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)
