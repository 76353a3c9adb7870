"""The audio the client keeps so that a dropped connection loses nothing: a bounded replay buffer.

Every frame has a position on the client's stream timeline (samples at 16 kHz since capture began).
The buffer holds the frames from the end of the last segment the server finished (`ack`) onwards:
frames already sent, then frames waiting to be sent. After a reconnection the new server session
starts at the buffer's first frame (`rewind`), so the segment that was open when the connection
dropped is heard again in full, and captions on the new session are placed on the stream timeline by
adding that frame's position.

The buffer is bounded by `max_ms`. Beyond it the oldest frames go: frames already sent only cost
the replay, frames never sent are lost audio, counted in `dropped_ms`.
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from dataclasses import dataclass

from streamst.types import SAMPLES_PER_MS

log = logging.getLogger("streamst.client.buffer")

N_BYTES_PER_SAMPLE = 2  # PCM16
TIMELINE_S = 300  # how far back `Timeline` remembers when audio was captured
TIMELINE_FRAMES_PER_S = 50


@dataclass(frozen=True)
class Frame:
    """One binary frame of PCM16 audio at 16 kHz, placed on the stream timeline."""

    position: int  # first sample's index on the stream timeline
    data: bytes  # PCM16 little-endian mono

    @property
    def n_samples(self) -> int:
        return len(self.data) // N_BYTES_PER_SAMPLE

    @property
    def end(self) -> int:
        return self.position + self.n_samples


class ReplayBuffer:
    def __init__(self, max_ms: int) -> None:
        if max_ms <= 0:
            raise ValueError(f"the buffer must hold some audio, got max_ms={max_ms}")
        self.max_samples = max_ms * SAMPLES_PER_MS
        self._frames: deque[Frame] = deque()
        self._n_sent = 0  # frames at the front already sent on the current connection
        self._n_samples = 0  # samples held
        self._next_position = 0  # position of the next frame to be appended
        self.dropped_samples = 0  # never-sent audio dropped to keep within max_ms

    def append(self, data: bytes) -> Frame:
        """Adds the next frame of PCM16 audio (whole samples) and drops the oldest beyond max_ms."""
        if len(data) % N_BYTES_PER_SAMPLE:
            raise ValueError(f"PCM16 frames hold whole 2-byte samples, got {len(data)} bytes")
        frame = Frame(self._next_position, data)
        self._next_position = frame.end
        self._frames.append(frame)
        self._n_samples += frame.n_samples
        while self._n_samples > self.max_samples and len(self._frames) > 1:
            self._drop_oldest()
        return frame

    def _drop_oldest(self) -> None:
        frame = self._frames.popleft()
        self._n_samples -= frame.n_samples
        if self._n_sent:
            self._n_sent -= 1
        else:
            self.dropped_samples += frame.n_samples
            log.debug("dropped %d unsent samples at %d: the buffer is full", frame.n_samples, frame.position)

    def next_unsent(self) -> Frame | None:
        return self._frames[self._n_sent] if self._n_sent < len(self._frames) else None

    def mark_sent(self, frame: Frame) -> None:
        """`frame`, the one `next_unsent` gave, has been sent (it may have been dropped meanwhile)."""
        if self._n_sent < len(self._frames) and self._frames[self._n_sent] is frame:
            self._n_sent += 1

    def ack(self, position: int) -> None:
        """The server finished everything before `position`: sent frames that end by then can go."""
        while self._n_sent and self._frames[0].end <= position:
            frame = self._frames.popleft()
            self._n_samples -= frame.n_samples
            self._n_sent -= 1

    def rewind(self) -> int:
        """A new connection: every frame held is to be sent again. Returns the position it starts at."""
        self._n_sent = 0
        return self.start_position

    def discard_sent(self) -> None:
        """Forget the frames already sent (no replay), e.g. when the server could not keep up."""
        for _ in range(self._n_sent):
            frame = self._frames.popleft()
            self._n_samples -= frame.n_samples
        self._n_sent = 0

    @property
    def start_position(self) -> int:
        return self._frames[0].position if self._frames else self._next_position

    @property
    def end_position(self) -> int:
        """Position just past the last frame appended (all the audio captured so far)."""
        return self._next_position

    @property
    def unsent_samples(self) -> int:
        return sum(f.n_samples for f in list(self._frames)[self._n_sent :])

    @property
    def n_samples(self) -> int:
        return self._n_samples


class Timeline:
    """When each stretch of the stream was captured, to tell how far behind the captions are."""

    def __init__(self) -> None:
        self._ends: deque[int] = deque(maxlen=TIMELINE_S * TIMELINE_FRAMES_PER_S)
        self._captured_s: deque[float] = deque(maxlen=TIMELINE_S * TIMELINE_FRAMES_PER_S)

    def add(self, end_position: int, captured_s: float) -> None:
        """Audio up to `end_position` (samples) was captured at `captured_s` (time.monotonic())."""
        self._ends.append(end_position)
        self._captured_s.append(captured_s)

    def captured_at(self, position: int) -> float | None:
        """When the audio up to `position` (samples) had all been captured; None if that is not
        captured yet or older than what is remembered."""
        i = bisect.bisect_left(self._ends, position)
        if i >= len(self._ends) or (i == 0 and len(self._ends) == self._ends.maxlen):
            return None
        return self._captured_s[i]
