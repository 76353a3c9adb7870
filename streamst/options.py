"""The one home of session settings: every mode, its policies and their latency knobs.

The CLI, the server (and its /v1/status and browser page), the benchmarks and the docs read
these specs; nothing else validates a mode, a policy or a knob. A new policy is one decision
class in `streamst.policies` and one `PolicySpec` entry below.

    options = session_options("direct", "wait-k", knob=2)      # DirectOptions(policy=WaitK(k=2))
    engine.session("en", "de", mode="direct", options=options)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from streamst.errors import OptionsError, UnknownModeError, UnknownPolicyError
from streamst.knobs import Knob
from streamst.policies import Confidence, Policy, TargetAgreement, WaitK
from streamst.sessions.base import MAX_STEP_MS, MIN_STEP_MS, SessionOptions
from streamst.sessions.cascade import CascadeOptions
from streamst.sessions.direct import DirectOptions
from streamst.vad import FRAME_MS, VADOptions

DEFAULT_MODE = "direct"  # the mode of a stream that names none: CLI, server, benchmarks, Engine.session


@dataclass(frozen=True)
class Common:
    """Settings every mode takes beside its policy and knob."""

    step_ms: int | None = None  # None: the mode's own step
    vad: VADOptions = field(default_factory=VADOptions)
    realtime: bool = False  # a live stream: skip stale steps when the audio outruns the engine


@dataclass(frozen=True)
class PolicySpec:
    """A policy of a mode: its latency knob and how it becomes session options."""

    mode: str
    name: str
    knob: Knob
    help: str
    build: Callable[[float, Common], SessionOptions]  # knob value (checked), common settings → options

    @property
    def label(self) -> str:
        return f"{self.mode}/{self.name}"


@dataclass(frozen=True)
class ModeSpec:
    name: str
    help: str
    options_type: type[SessionOptions]
    policies: tuple[PolicySpec, ...]  # the first is the mode's default

    @property
    def default_policy(self) -> PolicySpec:
        return self.policies[0]

    def policy(self, name: str | None) -> PolicySpec:
        """The named policy (the default for None or ""); raises OptionsError naming the choices."""
        if not name:
            return self.default_policy
        for spec in self.policies:
            if spec.name == name:
                return spec
        raise UnknownPolicyError(
            f"mode {self.name!r} has no policy {name!r}; choose one of: {', '.join(p.name for p in self.policies)}"
        )


# builders ---------------------------------------------------------------------------------------------


def _direct(policy: type[Policy], help: str) -> PolicySpec:
    def build(value: float, common: Common) -> DirectOptions:
        options = DirectOptions(policy=policy.with_knob(value), vad=common.vad, skip_stale_steps=common.realtime)
        return options if common.step_ms is None else replace(options, step_ms=common.step_ms)

    return PolicySpec("direct", policy.name, policy.knob, help, build)


def _cascade_sentence(step_ms: float, common: Common) -> CascadeOptions:
    if common.step_ms is not None and common.step_ms != step_ms:
        raise OptionsError(
            f"cascade/sentence's knob is its step_ms; got knob {step_ms:g} and step_ms {common.step_ms}: give one"
        )
    return CascadeOptions(step_ms=int(step_ms), vad=common.vad, skip_stale_steps=common.realtime)


def _cascade_segment(min_silence_ms: float, common: Common) -> CascadeOptions:
    options = CascadeOptions(
        early_sentences=False, vad=replace(common.vad, min_silence_ms=int(min_silence_ms)), skip_stale_steps=common.realtime
    )
    return options if common.step_ms is None else replace(options, step_ms=common.step_ms)


# the specs --------------------------------------------------------------------------------------------

MODES: dict[str, ModeSpec] = {
    spec.name: spec
    for spec in (
        ModeSpec(
            "direct",
            "commit target text while the sentence is still spoken (simultaneous policy on the decoder)",
            DirectOptions,
            (
                _direct(TargetAgreement, "commit what the last n translations of the source so far agree on"),
                _direct(WaitK, "trail the stable source by k words"),
                _direct(Confidence, "commit tokens of the stable source while their probability stays >= tau"),
            ),
        ),
        ModeSpec(
            "cascade",
            "transcribe, punctuate, and translate each complete sentence",
            CascadeOptions,
            (
                PolicySpec(
                    "cascade",
                    "sentence",
                    Knob("step_ms", int, default=CascadeOptions.step_ms, sweep=(CascadeOptions.step_ms,),
                         minimum=MIN_STEP_MS, maximum=MAX_STEP_MS,
                         help="re-transcription interval; a sentence is translated once two re-transcriptions "
                              "agree on it"),  # fmt: skip
                    "translate each complete sentence once two re-transcriptions agree on it",
                    _cascade_sentence,
                ),
                PolicySpec(
                    "cascade",
                    "segment",
                    Knob("min_silence_ms", int, default=VADOptions.min_silence_ms, sweep=(VADOptions.min_silence_ms,),
                         minimum=FRAME_MS, help="the silence that closes a segment"),  # fmt: skip
                    "translate only when the VAD closes a segment",
                    _cascade_segment,
                ),
            ),
        ),
    )
}
"""mode → spec; the first policy of each mode is its default."""


def mode_spec(mode: str) -> ModeSpec:
    """The spec of `mode`; raises OptionsError naming the choices."""
    if mode not in MODES:
        raise UnknownModeError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    return MODES[mode]


def policy_spec(mode: str, policy: str | None = None) -> PolicySpec:
    """The spec of `policy` in `mode` (the mode's default policy for None)."""
    return mode_spec(mode).policy(policy)


@dataclass(frozen=True)
class SessionChoice:
    """What a stream runs with, defaults filled in."""

    mode: str
    policy: str
    knob: float  # the policy's knob in force
    options: SessionOptions  # what `Engine.session(mode=mode, options=...)` takes

    @property
    def step_ms(self) -> int:
        return self.options.step_ms


def choose(
    mode: str,
    policy: str | None = None,
    knob: float | None = None,
    step_ms: int | None = None,
    vad: VADOptions | None = None,
    realtime: bool = False,
) -> SessionChoice:
    """The session for a mode, a policy (the mode's default for None) and its knob (the policy's
    default for None); raises OptionsError (UnknownModeError, UnknownPolicyError for those) that
    names the bad value and the choices."""
    spec = policy_spec(mode, policy)
    common = Common(step_ms=step_ms, vad=vad or VADOptions(), realtime=realtime)
    if knob is None:  # a knob that is itself a common setting takes that setting when only it is given
        knob = {"step_ms": step_ms, "min_silence_ms": vad.min_silence_ms if vad else None}.get(spec.knob.name)
    value = spec.knob.parse(spec.knob.default if knob is None else knob)
    options = spec.build(value, common)
    return SessionChoice(spec.mode, spec.name, value, options)


def session_options(*args: Any, **kwargs: Any) -> SessionOptions:
    """`choose(...).options`: what `Engine.session(mode=...)` takes; same arguments as `choose`."""
    return choose(*args, **kwargs).options


def describe() -> dict[str, Any]:
    """mode → its help, default policy, and policies with their knobs, as JSON: for /v1/status,
    the browser page and the docs."""
    return {
        mode.name: {
            "help": mode.help,
            "default_policy": mode.default_policy.name,
            "policies": {p.name: {"help": p.help, "knob": p.knob.describe()} for p in mode.policies},
        }
        for mode in MODES.values()
    }
