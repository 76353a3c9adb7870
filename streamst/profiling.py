"""Where a step's time goes: named spans, summed by a `Profile` that the caller switches on.

    profile = Profile()
    with profile.recording():
        session.push(audio)          # spans inside add to `profile`, in this thread only
    profile.totals()                 # {"whisper.encode": SpanTotal(n_calls, seconds), ...}

Library code marks its stages with `with span("whisper.encode"):`; with no profile recording in
the current thread (the normal case) a span costs one context-variable lookup. Spans nest: the
inner span's time also counts in the outer one, so a name says what it includes."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

_active: contextvars.ContextVar[Profile | None] = contextvars.ContextVar("streamst_profile", default=None)


@dataclass(frozen=True)
class SpanTotal:
    n_calls: int
    seconds: float


class Profile:
    """Totals per span name; several threads may record into one profile at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, SpanTotal] = {}

    @contextlib.contextmanager
    def recording(self) -> Iterator[Profile]:
        """Spans run by this thread (and contexts copied from it) inside the block add here."""
        token = _active.set(self)
        try:
            yield self
        finally:
            _active.reset(token)

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            old = self._totals.get(name, SpanTotal(0, 0.0))
            self._totals[name] = SpanTotal(old.n_calls + 1, old.seconds + seconds)

    def totals(self) -> dict[str, SpanTotal]:
        with self._lock:
            return dict(self._totals)


@contextlib.contextmanager
def span(name: str) -> Iterator[None]:
    """Times the block into the profile recording in this context, if any."""
    profile = _active.get()
    if profile is None:
        yield
        return
    started_s = time.perf_counter()
    try:
        yield
    finally:
        profile.add(name, time.perf_counter() - started_s)


@contextlib.contextmanager
def locked(lock: threading.Lock, name: str) -> Iterator[None]:
    """Holds `lock` for the block; the time spent waiting for it is the span `name`."""
    with span(name):
        lock.acquire()
    try:
        yield
    finally:
        lock.release()

