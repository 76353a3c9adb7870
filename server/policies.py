"""The session a client asks for in `start` (mode, policy, knob, step): checked by the specs in
`streamst.options`, the ones the CLI and the benchmarks use too; their errors become protocol
errors with stable codes."""

from __future__ import annotations

from typing import Any

from streamst import options
from streamst.errors import OptionsError, UnknownModeError, UnknownPolicyError
from streamst.options import SessionChoice
from streamst.wire import ErrorCode, ProtocolError

__all__ = ["SessionChoice", "choose", "describe"]


def choose(
    mode: str, policy: str | None, knob: float | None, step_ms: int | None, realtime: bool = True
) -> SessionChoice:
    """Checks a stream's settings; raises ProtocolError with a stable code and a fix.

    `realtime` lets a session that falls behind skip stale intermediate steps (live streams)."""
    try:
        return options.choose(mode, policy, knob, step_ms, realtime=realtime)
    except UnknownModeError as e:
        raise ProtocolError(ErrorCode.UNSUPPORTED_MODE, str(e)) from e
    except UnknownPolicyError as e:
        raise ProtocolError(ErrorCode.UNSUPPORTED_POLICY, str(e)) from e
    except OptionsError as e:
        raise ProtocolError(ErrorCode.BAD_OPTION, str(e)) from e


def describe() -> dict[str, Any]:
    """Every mode, its policies and their knobs (for /v1/status and the browser page)."""
    return options.describe()
