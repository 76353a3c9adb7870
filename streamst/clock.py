"""Clocks: one session runs on a simulated clock (benchmarks, tests) or the wall clock (server)."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> float:
        """Milliseconds since an arbitrary, fixed origin; never decreases."""
        ...


class WallClock:
    """Monotonic wall-clock time."""

    def __init__(self) -> None:
        self._origin_s = time.monotonic()

    def now_ms(self) -> float:
        return (time.monotonic() - self._origin_s) * 1000.0


class SimulatedClock:
    """A clock that only moves when told to; exact and repeatable."""

    def __init__(self, start_ms: float = 0.0) -> None:
        self._now_ms = float(start_ms)

    def now_ms(self) -> float:
        return self._now_ms

    def advance(self, delta_ms: float) -> None:
        if delta_ms < 0:
            raise ValueError(f"a clock cannot go back: advance({delta_ms})")
        self._now_ms += delta_ms

    def set(self, now_ms: float) -> None:
        if now_ms < self._now_ms:
            raise ValueError(f"a clock cannot go back: set({now_ms}) < {self._now_ms}")
        self._now_ms = float(now_ms)
