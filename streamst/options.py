"""One mapping from user-facing knobs (mode, policy, knob, step) to session options, shared by
the CLI, the server and the benchmarks so the same words mean the same session everywhere."""

from __future__ import annotations

from dataclasses import replace

from streamst.errors import OptionsError
from streamst.sessions.cascade import CascadeOptions
from streamst.sessions.direct import DirectOptions
from streamst.vad import VADOptions

MODES = ("direct", "cascade")
DEFAULT_MODE = "direct"  # the mode of a stream that names none: CLI, server, Engine.session


def session_options(
    mode: str,
    policy: str | None = None,
    knob: float | None = None,
    step_ms: int | None = None,
    vad: VADOptions | None = None,
    realtime: bool = False,
) -> CascadeOptions | DirectOptions:
    """Options for `Engine.session(mode=...)`. `policy`/`knob` apply to the direct mode only;
    `realtime` skips stale steps when audio arrives faster than the engine keeps up."""
    if mode not in MODES:
        raise OptionsError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    if mode == "cascade":
        if policy not in (None, "", "cascade"):
            raise OptionsError(f"the cascade mode has no policy; got --policy {policy}")
        options: CascadeOptions | DirectOptions = CascadeOptions(skip_stale_steps=realtime)
    else:
        options = DirectOptions(policy=policy or DirectOptions.policy, knob=knob, skip_stale_steps=realtime)
    if step_ms is not None:
        options = replace(options, step_ms=step_ms)
    if vad is not None:
        options = replace(options, vad=vad)
    return options
