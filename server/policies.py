"""The session a client asks for in `start` (mode, policy, knob, step), checked and turned into engine
options by `streamst.options`, the mapping the CLI and the benchmarks use too."""

from __future__ import annotations

from dataclasses import dataclass

from streamst.errors import OptionsError
from streamst.options import MODES, session_options
from streamst.policies import POLICIES, make_policy
from streamst.sessions.cascade import CascadeOptions
from streamst.sessions.direct import DirectOptions
from streamst.wire import ErrorCode, ProtocolError

MIN_STEP_MS = 100
MAX_STEP_MS = 10_000
MODES_WITH_POLICIES = ("direct",)


@dataclass(frozen=True)
class SessionChoice:
    """What a stream runs with, defaults filled in."""

    mode: str
    policy: str | None  # None for a mode without simultaneous policies (cascade)
    knob: float | None  # the policy's latency knob in force (wait-k's k, la's n, confidence's tau)
    step_ms: int  # how much new audio triggers the next step
    options: CascadeOptions | DirectOptions


def choose(
    mode: str, policy: str | None, knob: float | None, step_ms: int | None, realtime: bool = True
) -> SessionChoice:
    """Checks a stream's settings; raises ProtocolError with a stable code and a fix.

    `realtime` lets a session that falls behind skip stale intermediate steps (live streams)."""
    if mode not in MODES:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_MODE, f"mode {mode!r} is not available; choose one of: {', '.join(MODES)}"
        )
    _check_step(step_ms)
    _check_policy(mode, policy, knob)
    try:
        options = session_options(mode, policy or None, knob, step_ms, realtime=realtime)
    except OptionsError as e:
        raise ProtocolError(ErrorCode.BAD_OPTION, str(e)) from e
    if isinstance(options, DirectOptions):
        return SessionChoice(mode, options.policy, _knob_in_force(options), options.step_ms, options)
    return SessionChoice(mode, None, None, options.step_ms, options)


def describe() -> dict[str, dict[str, str]]:
    """Per mode, its policies and what each one's knob is (for /v1/status)."""
    return {
        mode: {name: spec[0] for name, spec in POLICIES.items()} if mode in MODES_WITH_POLICIES else {}
        for mode in MODES
    }


def _check_step(step_ms: int | None) -> None:
    if step_ms is not None and not MIN_STEP_MS <= step_ms <= MAX_STEP_MS:
        raise ProtocolError(
            ErrorCode.BAD_OPTION, f"step_ms {step_ms} is out of range; give {MIN_STEP_MS} to {MAX_STEP_MS} ms"
        )


def _check_policy(mode: str, policy: str | None, knob: float | None) -> None:
    if mode not in MODES_WITH_POLICIES:
        if policy not in (None, "", mode):
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_POLICY,
                f"mode {mode!r} has no simultaneous policy; leave 'policy' out, or choose mode 'direct' for "
                f"{', '.join(POLICIES)}",
            )
        if knob is not None:
            raise ProtocolError(
                ErrorCode.BAD_OPTION, f"mode {mode!r} has no latency knob; leave 'knob' out (step_ms sets its pace)"
            )
        return
    if policy and policy not in POLICIES:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_POLICY, f"policy {policy!r} is not available; choose one of: {', '.join(POLICIES)}"
        )


def _knob_in_force(options: DirectOptions) -> float:
    field_name = POLICIES[options.policy][0]
    return float(getattr(make_policy(options.policy, options.knob), field_name))
