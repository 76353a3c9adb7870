"""Latency knobs: the one number a user turns per policy, with its type, range, default and sweep.

A `Knob` is the single place a knob is validated: policies check their own knob with it, and the
CLI, the server, the benchmarks and the docs read its name, range and help from it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from streamst.errors import OptionsError


@dataclass(frozen=True)
class Knob:
    """One latency knob of a policy."""

    name: str  # the option it sets, as the CLI flag (--k), the server's `knob` field and the docs name it
    kind: type[int] | type[float]  # int: whole numbers only
    default: float  # the value a session takes when none is given
    sweep: tuple[float, ...]  # the values a benchmark sweeps when none are given
    help: str  # what the knob does, for --help, /v1/status and the docs
    minimum: float | None = None  # smallest valid value (None: unbounded)
    maximum: float | None = None  # largest valid value (None: unbounded)
    exclusive: bool = False  # the bounds themselves are invalid (0 < tau < 1)

    def __post_init__(self) -> None:
        for value in (self.default, *self.sweep):
            self.parse(value)

    @property
    def range_text(self) -> str:
        """The valid range in words: "at least 2", "between 0 and 1 (exclusive)"."""
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            return f"between {low:g} and {high:g}" + (" (exclusive)" if self.exclusive else "")
        if low is not None:
            return f"more than {low:g}" if self.exclusive else f"at least {low:g}"
        if high is not None:
            return f"less than {high:g}" if self.exclusive else f"at most {high:g}"
        return "any number"

    def parse(self, value: Any) -> int | float:
        """`value` as this knob's type; raises OptionsError naming the knob and its range."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise OptionsError(f"{self.name} must be a number {self.range_text}, got {value!r}") from None
        if not math.isfinite(number) or (self.kind is int and not number.is_integer()):
            kind = "whole number" if self.kind is int else "number"
            raise OptionsError(f"{self.name} must be a {kind} {self.range_text}, got {value!r}")
        if not self._in_range(number):
            raise OptionsError(f"{self.name} must be {self.range_text}, got {value!r}")
        return int(number) if self.kind is int else number

    def describe(self) -> dict[str, Any]:
        """The knob as JSON: for /v1/status, the browser page and the docs."""
        return {
            "name": self.name,
            "type": "integer" if self.kind is int else "number",
            "default": self.default,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "exclusive": self.exclusive,
            "help": self.help,
        }

    def _in_range(self, number: float) -> bool:
        if self.exclusive:
            return (self.minimum is None or number > self.minimum) and (self.maximum is None or number < self.maximum)
        return (self.minimum is None or number >= self.minimum) and (self.maximum is None or number <= self.maximum)
