"""Faults: failures once found against `streamst-server` on 127.0.0.1, replayed with real FLEURS
speech at real-time pace against servers started here, each with the flags its case needs.

    streamst-bench faults -o out/faults --funasr-client /tmp/funasr_wss_client.py

1. SIGTERM at 8 s while a native cascade en→zh, a native direct en→de and a FunASR 2pass en→zh
   session keep streaming fleurs-en-000+001: each must get its finals, `end` reason shutdown and
   close 1001, as many finals as the same clients sending `stop` at 8 s.
2. `--finish-timeout-s 0.1`, 6.5 s of fleurs-en-000 (cascade), `stop`: an explicit
   `finish_timeout` error and close 1013, not a silent `end`.
3. Two clients flood audio at 5x real time while one streams at 1x (cascade): the 1x client must
   get every final, as it does alone; the flooders pay for their backlog.
4. `--allow-origin https://good.example`: an upgrade from a rebinding page (its name as Origin and
   Host) must get 403; the allowed origin still gets 101.
5. Bad input gets its code: `bad_json` for a 5000-digit number or 100000 "[" (both endpoints), 400
   for a repeated Origin/Host/Upgrade header, `idle_timeout` for empty frames only, HTTP 503
   `shutting_down` for an upgrade during shutdown.
6. FunASR's own `funasr_wss_client.py`, run unchanged (2pass, fleurs-en-001) while five real-time
   clients load the server, must get its end acknowledgement and the finals it gets alone.

Every server, client and loop here is bounded in time and count, and every child process is ended
by its pid. Not a test: it takes minutes and needs the real models.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from streamst import metrics, wire
from streamst.audio import float32_to_pcm16
from streamst.benchmarks import datasets, load, probes
from streamst.benchmarks.datasets import SpeechInstance
from streamst.client.errors import ClientError, ServerRefused
from streamst.client.stream import StreamResult, stream_pcm
from streamst.errors import StreamstError
from streamst.languages import resolve
from streamst.server import process as server_process
from streamst.types import SAMPLE_RATE_HZ
from streamst.wire import ErrorCode

log = logging.getLogger("streamst.benchmarks.faults")

CASES = (1, 2, 3, 4, 5, 6)
PAIR = "en-zh"  # the clips: FLEURS-mini English with Chinese references
TITLES = {
    1: "SIGTERM while three clients keep streaming",
    2: "a finish cut short by --finish-timeout-s 0.1",
    3: "a 1x client beside clients flooding at 5x",
    4: "a page from another origin, with --allow-origin",
    5: "bad JSON, repeated headers, empty frames, an upgrade during shutdown",
    6: "FunASR's own client while the server is loaded",
}
SERVER_START_TIMEOUT_S = 300.0
SESSION_TIMEOUT_S = 300.0  # any one session: its audio, finishing, closing
FUNASR_FRAME_S = 0.06  # funasr_wss_client.py's frames (chunk_size 5,10,5 and chunk_interval 10: 60 ms)

SIGTERM_AT_S = 8.0  # case 1
CASE1_CLIPS = ("fleurs-en-000", "fleurs-en-001")
SENTENCE_CLIP = "fleurs-en-000"  # cases 2 and 5 stream (part of) it
CASE2_AUDIO_S, CASE2_FINISH_TIMEOUT_S = 6.5, 0.1
HEALTHY_S = 45.0  # case 3: the 1x client's programme (it was ended after ~30 s)
N_FLOODERS = 2
FLOOD_SPEED = 5.0  # times real time
FLOOD_AUDIO_S = 300.0  # audio per flooding session
FLOOD_DELAY_S = 2.0  # the 1x session opens first
FLOOD_RETRY_S = 1.0  # a flooder ended or refused comes back after this long
MAX_FLOOD_SESSIONS = 40  # per flooder
GOOD_ORIGIN = "https://good.example"  # case 4
IDLE_TIMEOUT_S = 3.0  # case 5's server, so that empty frames are cut off soon
SHUTDOWN_AT_S = 3.0  # case 5: SIGTERM this far into a sentence
SHUTDOWN_PROBE_DELAY_S = 0.2  # and an upgrade this long after it
CASE6_CLIP = "fleurs-en-001"
N_LOAD_CLIENTS = 5  # case 6's load: real-time cascade clients
LOAD_AUDIO_S = 120.0
LOAD_WARMUP_S = 15.0  # the load streams this long before the FunASR client starts
ACCEPT_WAIT_S = 30.0  # how long to wait for /v1/status to say the server accepts a session
STATUS_POLL_S = 0.5
CLIENT_TIMEOUT_S = 300.0  # one run of funasr_wss_client.py
N_CLIENT_ATTEMPTS = 3  # runs of it when its handshake is refused with 503
LOG_SETTLE_S = 1.0  # for the server to log the sessions of clients just gone
LOG_EVENTS = ("close", "finish_timeout", "client_gone", "send_timeout", "engine_error")


class FaultsError(StreamstError):
    """A server for a case could not be started."""


@dataclass(frozen=True)
class FaultPlan:
    cases: tuple[int, ...]  # which of CASES to run, in order
    clips: tuple[SpeechInstance, ...]  # FLEURS-mini English clips with Chinese references, audio decoded
    output: Path  # faults.txt, faults.json and the servers' logs go here
    funasr_client: Path | None = None  # FunASR's funasr_wss_client.py; None skips case 6


@dataclass(frozen=True)
class Check:
    expectation: str  # what must hold
    holds: bool
    seen: str  # what happened


@dataclass(frozen=True)
class CaseResult:
    number: int
    title: str
    checks: tuple[Check, ...] = ()
    notes: tuple[str, ...] = ()  # what else happened, not judged: text comparisons, the other clients
    evidence: dict[str, Any] = field(default_factory=dict)  # messages received, server log lines
    skipped: str = ""  # why the case did not run

    @property
    def holds(self) -> bool:
        return not self.skipped and bool(self.checks) and all(c.holds for c in self.checks)


@dataclass(frozen=True)
class SessionOutcome:
    """How one session went, over either protocol."""

    label: str  # "native cascade en→zh", ...
    finals: tuple[str, ...]  # each final's committed text (FunASR: each `2pass-offline` text)
    n_segments: int | None  # the `end` message's count of finals (native only)
    end: str  # native `end` reason; "ack" for FunASR's end acknowledgement; "-" for neither
    errors: tuple[str, ...]  # error codes
    close_code: int | None
    separator: str  # between the finals' text: " " for languages written with spaces
    failure: str = ""  # why the session never started (refused, unreachable)
    messages: tuple[dict[str, Any], ...] = ()  # every message but partials, for the evidence

    @property
    def text(self) -> str:
        return self.separator.join(f for f in self.finals if f)

    @property
    def n_text_finals(self) -> int:
        return sum(1 for f in self.finals if f)

    def describe(self) -> str:
        if self.failure:
            return f"{self.label}: {self.failure}"
        segments = f" (`end` counts {self.n_segments})" if self.n_segments is not None else ""
        errors = f"error {', '.join(self.errors)}" if self.errors else "no error"
        return (
            f"{self.label}: {_finals(len(self.finals))}{segments}, end {self.end}, "
            f"close {self.close_code}, {errors}"
        )


def _finals(n: int) -> str:
    return f"{n} final" if n == 1 else f"{n} finals"


# ---------------------------------------------------------------------------------------
# Running


def run_faults(plan: FaultPlan, on_case: Callable[[int], None] | None = None) -> list[CaseResult]:
    """Every case of `plan` in turn, each against its own server(s)."""
    runners: dict[int, Callable[[FaultPlan], CaseResult]] = {
        1: case_sigterm, 2: case_finish_timeout, 3: case_flood, 4: case_origin, 5: case_bad_input,
        6: case_funasr_client,
    }  # fmt: skip
    results = []
    for number in plan.cases:
        if on_case is not None:
            on_case(number)
        results.append(runners[number](plan))
    return results


@dataclass(frozen=True)
class Server:
    port: int  # main port: page, /v1/stream, /funasr
    funasr_port: int | None  # the FunASR port, when started with one
    process: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"ws://{probes.LOOPBACK}:{self.port}{wire.STREAM_PATH}"


@contextlib.contextmanager
def serving(output: Path, name: str, *flags: str, funasr: bool = False) -> Iterator[Server]:
    """`streamst-server` on free loopback ports for the block, its log in OUT/server-NAME.log."""
    port = server_process.free_port()
    funasr_port = _other_free_port(port) if funasr else None
    log_path = output / f"server-{name}.log"
    options = ("--log-json", *(("--funasr-port", str(funasr_port)) if funasr_port else ()), *flags)
    try:
        with server_process.running(port, log_path, *options, ready_timeout_s=SERVER_START_TIMEOUT_S) as process:
            yield Server(port, funasr_port, process, log_path)
    except server_process.ServerStartError as e:
        raise FaultsError(f"{e}\n(the whole log is in {log_path})") from e


def _other_free_port(taken: int) -> int:
    for _ in range(10):
        if (port := server_process.free_port()) != taken:
            return port
    raise FaultsError("found no second free port on 127.0.0.1")


def log_lines(server: Server) -> list[dict[str, Any]]:
    """The server's log lines that tell how sessions ended: close events, warnings, errors, refusals."""
    lines = []
    for text in server.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            lines.append({"text": text})
            continue
        message = str(line.get("message", ""))
        if line.get("event") in LOG_EVENTS or line.get("level") in ("warning", "error") or message.startswith(
            ("refused", "shutting down", "signal")
        ):
            lines.append(line)
    return lines


def close_tally(lines: Sequence[dict[str, Any]], endpoint: str) -> str:
    """How the endpoint's sessions ended, from the server's close events: "end stop x2; error overloaded x1"."""
    ends = [f"end {line.get('reason')}" if line.get("error") in (None, "-") else f"error {line.get('error')}"
            for line in lines if line.get("event") == "close" and line.get("endpoint") == endpoint]  # fmt: skip
    return _tally(ends)


def _clip(plan: FaultPlan, clip_id: str) -> SpeechInstance:
    for clip in plan.clips:
        if clip.id == clip_id:
            return clip
    raise FaultsError(f"FLEURS-mini has no clip {clip_id}; the faults need the English clips 000 and 001")


def _pcm(*clips: SpeechInstance, seconds: float | None = None) -> bytes:
    """The clips' audio back to back as PCM16, cut at `seconds`."""
    pcm = b"".join(float32_to_pcm16(clip.load_audio()) for clip in clips)
    n_bytes = None if seconds is None else round(seconds * SAMPLE_RATE_HZ) * wire.BYTES_PER_SAMPLE["pcm16"]
    return pcm[:n_bytes]


# ---------------------------------------------------------------------------------------
# Sessions


async def stream_native(url: str, start: wire.Start, pcm: bytes, speed: float = 1.0) -> StreamResult | str:
    """`stream_pcm` within SESSION_TIMEOUT_S; a string saying why when it was refused or timed out."""
    try:
        async with asyncio.timeout(SESSION_TIMEOUT_S + len(pcm) / SAMPLE_RATE_HZ):
            return await stream_pcm(url, start, pcm, speed=speed)
    except ServerRefused as e:
        return f"refused: {e.code or e}"
    except ClientError as e:
        return f"failed: {e}"
    except TimeoutError:
        return f"no end within {SESSION_TIMEOUT_S:g} s after the audio"


def native_outcome(label: str, start: wire.Start, result: StreamResult | str) -> SessionOutcome:
    separator = " " if resolve(start.target).latency_unit == "word" else ""
    if isinstance(result, str):
        return SessionOutcome(label, (), None, "-", (), None, separator, failure=result)
    end = result.end
    kept = [json.loads(wire.encode(r.message)) for r in result.messages if not _is_partial(r.message)]
    return SessionOutcome(
        label,
        finals=tuple(f.committed_text for f in result.finals),
        n_segments=end.n_segments if end else None,
        end=end.reason if end else "-",
        errors=tuple(str(e.code) for e in result.errors),
        close_code=result.close_code,
        separator=separator,
        messages=tuple(kept),
    )


def _is_partial(message: wire.ServerMessage) -> bool:
    return isinstance(message, wire.Caption) and message.type == "partial"


def funasr_outcome(label: str, answer: probes.Answer) -> SessionOutcome:
    if answer.http_status is not None or answer.failure:
        return SessionOutcome(label, (), None, "-", (), None, "", failure=answer.summary())
    ack = probes.funasr_ack(answer.messages)
    end = "-" if ack is None else "error" if ack.get("error_code") else "ack"
    kept = [m for m in answer.messages if m.get("mode") != "2pass-online"]
    return SessionOutcome(
        label, tuple(probes.funasr_finals(answer.messages)), None, end, answer.error_codes, answer.close_code, "",
        messages=tuple(kept),
    )  # fmt: skip


def delivered(outcome: SessionOutcome, end: str, close_code: int, why: str = "") -> Check:
    """Every final (as many as `end` counts), then `end` with this reason, this close code, no error."""
    counted = outcome.n_segments is None or outcome.n_segments == len(outcome.finals)
    holds = not outcome.failure and outcome.end == end and outcome.close_code == close_code
    return Check(
        f"{outcome.label}: its finals, then end {end}, close {close_code}, no error{why}",
        holds and counted and not outcome.errors,
        outcome.describe(),
    )


def same_finals(outcome: SessionOutcome, baseline: SessionOutcome, without: str) -> Check:
    """As many finals with text as the run without the fault."""
    return Check(
        f"{outcome.label}: as many finals as the run {without}",
        outcome.n_text_finals == baseline.n_text_finals and baseline.n_text_finals > 0,
        f"{_finals(outcome.n_text_finals)} with text; {baseline.n_text_finals} in the run {without}",
    )


def compare_text(outcome: SessionOutcome, baseline: SessionOutcome, without: str) -> str:
    """Whether the final text is the one the run without the fault got; chrF between them when not."""
    if outcome.text == baseline.text:
        return f"{outcome.label}: the same final text as the run {without}"
    score = metrics.chrf([outcome.text], [baseline.text]).score if outcome.text and baseline.text else 0.0
    return (
        f"{outcome.label}: the final text differs from the run {without} (chrF {score:.1f} against it)\n"
        f"    {without}: {baseline.text}\n    with the fault: {outcome.text}"
    )


# ---------------------------------------------------------------------------------------
# Case 1: SIGTERM while clients keep streaming


CASE1_SESSIONS = (
    ("native cascade en→zh", wire.Start("en", "zh", mode="cascade")),
    ("native direct en→de", wire.Start("en", "de", mode="direct")),
)
CASE1_FUNASR = "FunASR 2pass en→zh"


def case_sigterm(plan: FaultPlan) -> CaseResult:
    clips = [_clip(plan, clip_id) for clip_id in CASE1_CLIPS]
    with serving(plan.output, "case1-stop", funasr=True) as server:
        baseline = asyncio.run(_three_sessions(server, _pcm(*clips, seconds=SIGTERM_AT_S), sigterm_at_s=None))
        baseline_log = log_lines(server)
    with serving(plan.output, "case1-sigterm", funasr=True) as server:
        faulty = asyncio.run(_three_sessions(server, _pcm(*clips), sigterm_at_s=SIGTERM_AT_S))
        _wait_exit(server)
        fault_log = log_lines(server)
    without = f"with a stop at {SIGTERM_AT_S:g} s"
    checks = [delivered(b, _end_of(b, "stop"), wire.CLOSE_NORMAL, f" ({without})") for b in baseline]
    for outcome, base in zip(faulty, baseline, strict=True):
        checks += [delivered(outcome, _end_of(outcome, "shutdown"), wire.CLOSE_GOING_AWAY),
                   same_finals(outcome, base, without)]  # fmt: skip
    return CaseResult(
        1,
        TITLES[1],
        tuple(checks),
        notes=tuple(compare_text(o, b, without) for o, b in zip(faulty, baseline, strict=True)),
        evidence={
            "with stop": [asdict(o) for o in baseline],
            "with SIGTERM": [asdict(o) for o in faulty],
            "server log with stop": baseline_log,
            "server log with SIGTERM": fault_log,
        },
    )


def _end_of(outcome: SessionOutcome, native_reason: str) -> str:
    """The end a session of case 1 must get: FunASR's acknowledgement, or native `end` with this reason."""
    return "ack" if outcome.label == CASE1_FUNASR else native_reason


async def _three_sessions(server: Server, pcm: bytes, sigterm_at_s: float | None) -> list[SessionOutcome]:
    """The three clients of case 1 stream `pcm` at once; with `sigterm_at_s`, the server gets
    SIGTERM that long after they start while they go on sending."""
    assert server.funasr_port is not None
    sessions = [stream_native(server.url, start, pcm) for _, start in CASE1_SESSIONS]
    funasr = probes.stream_funasr(
        server.funasr_port, "/", pcm, "en", "zh", frame_s=FUNASR_FRAME_S, timeout_s=SESSION_TIMEOUT_S
    )
    signal_task = asyncio.create_task(_sigterm_after(server.process, sigterm_at_s)) if sigterm_at_s else None
    *native, answer = await asyncio.gather(*sessions, funasr)
    if signal_task is not None:
        await signal_task
    outcomes = [native_outcome(label, start, r) for (label, start), r in zip(CASE1_SESSIONS, native, strict=True)]
    return [*outcomes, funasr_outcome(CASE1_FUNASR, answer)]


def _wait_exit(server: Server) -> None:
    """Waits for a server sent SIGTERM to finish its sessions and exit (bounded; `serving` kills it after)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(timeout=server_process.STOP_TIMEOUT_S)


async def _sigterm_after(process: subprocess.Popen, delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    log.info("SIGTERM to streamst-server (pid %d)", process.pid)
    process.send_signal(signal.SIGTERM)


# ---------------------------------------------------------------------------------------
# Case 2: finish_timeout


def case_finish_timeout(plan: FaultPlan) -> CaseResult:
    start = wire.Start("en", "zh", mode="cascade")
    pcm = _pcm(_clip(plan, SENTENCE_CLIP), seconds=CASE2_AUDIO_S)
    with serving(plan.output, "case2", "--finish-timeout-s", str(CASE2_FINISH_TIMEOUT_S)) as server:
        outcome = native_outcome("native cascade en→zh", start, asyncio.run(stream_native(server.url, start, pcm)))
        server_log = log_lines(server)
    code = ErrorCode.FINISH_TIMEOUT
    error = next((m for m in outcome.messages if m.get("type") == "error"), {})
    check = Check(
        f"an error {code}, then end error, close {wire.close_code(code)}",
        code in outcome.errors and outcome.end == "error" and outcome.close_code == wire.close_code(code),
        outcome.describe() + (f"; the error says: {error.get('message')}" if error else ""),
    )
    return CaseResult(2, TITLES[2], (check,), evidence={"session": asdict(outcome), "server log": server_log})


# ---------------------------------------------------------------------------------------
# Case 3: flooders beside a 1x client


def case_flood(plan: FaultPlan) -> CaseResult:
    start = wire.Start("en", "zh", mode="cascade")
    healthy = load.programme(plan.clips, first=0, duration_s=HEALTHY_S)
    pcm = float32_to_pcm16(healthy.load_audio())
    with serving(plan.output, "case3-alone") as server:
        alone = asyncio.run(stream_native(server.url, start, pcm))
    with serving(plan.output, "case3-flood") as server:
        flooded, flood_outcomes = asyncio.run(_beside_flooders(server, start, pcm, plan.clips))
        server_log = log_lines(server)
    label = "1x cascade en→zh"
    baseline, outcome = native_outcome(label, start, alone), native_outcome(label, start, flooded)
    without = "alone"
    checks = (
        delivered(baseline, "stop", wire.CLOSE_NORMAL, f" ({without})"),
        delivered(outcome, "stop", wire.CLOSE_NORMAL),
        same_finals(outcome, baseline, without),
    )
    notes = [compare_text(outcome, baseline, without), *_lag_notes(label, flooded, healthy)]
    notes += [f"flooder {i} ({FLOOD_SPEED:g}x): {_tally(o)} (one still streaming when the 1x client was done "
              "is not counted)" for i, o in enumerate(flood_outcomes)]  # fmt: skip
    evidence = {"alone": asdict(baseline), "beside flooders": asdict(outcome), "flooders": flood_outcomes,
                "server log": server_log}  # fmt: skip
    return CaseResult(3, TITLES[3], checks, tuple(notes), evidence)


async def _beside_flooders(
    server: Server, start: wire.Start, pcm: bytes, clips: Sequence[SpeechInstance]
) -> tuple[StreamResult | str, list[list[str]]]:
    healthy = asyncio.create_task(stream_native(server.url, start, pcm))
    await asyncio.sleep(FLOOD_DELAY_S)
    outcomes: list[list[str]] = [[] for _ in range(N_FLOODERS)]
    streams = load.programmes(clips, 1 + N_FLOODERS, FLOOD_AUDIO_S)[1:]  # programme 0 starts where the 1x one does
    flooders = [
        asyncio.create_task(_flood(server.url, start, float32_to_pcm16(s.load_audio()), healthy, outcomes[i]))
        for i, s in enumerate(streams)
    ]
    result = await healthy
    for task in flooders:
        task.cancel()
    await asyncio.gather(*flooders, return_exceptions=True)
    return result, outcomes


async def _flood(url: str, start: wire.Start, pcm: bytes, healthy: asyncio.Task, outcomes: list[str]) -> None:
    """Sessions at FLOOD_SPEED, one after another (a refused or ended one comes back) while the 1x
    client streams; each session's outcome is appended to `outcomes`."""
    for _ in range(MAX_FLOOD_SESSIONS):
        if healthy.done():
            return
        result = await stream_native(url, start, pcm, speed=FLOOD_SPEED)
        outcomes.append(result if isinstance(result, str) else _result_summary(result))
        await asyncio.sleep(FLOOD_RETRY_S)


def _result_summary(result: StreamResult) -> str:
    errors = ",".join(str(e.code) for e in result.errors)
    end = result.end.reason if result.end else "no end"
    return f"{_finals(len(result.finals))}, end {end}" + (f", error {errors}" if errors else "")


def _tally(outcomes: Sequence[str]) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    return (f"{len(outcomes)} sessions: " + "; ".join(f"{o} x{n}" for o, n in counts.items())) if outcomes else "none"


def _lag_notes(label: str, result: StreamResult | str, stream: SpeechInstance) -> list[str]:
    if isinstance(result, str):
        return []
    pair = datasets.parse_pairs(PAIR)[0]
    report = load.score_client(1 + N_FLOODERS, 0, result, stream, pair)
    return [
        f"{label} beside the flooders: most behind real time {report.max_lag_s:.1f} s, ended "
        f"{max(0.0, report.end_lag_s):.1f} s after its last frame, chrF {report.chrf:.1f} against the references"
    ]


# ---------------------------------------------------------------------------------------
# Cases 4 and 5: handshakes and bad input


def probe_check(probe: probes.Probe, answer: probes.Answer) -> Check:
    return Check(f"{probe.name}: {probe.expected}", answer.summary() == probe.expected, answer.summary())


def case_origin(plan: FaultPlan) -> CaseResult:
    checked = (probes.EVIL_ORIGIN, probes.allowed_origin(GOOD_ORIGIN))
    with serving(plan.output, "case4", "--allow-origin", GOOD_ORIGIN) as server:
        answers = [asyncio.run(probe.send(server.port)) for probe in checked]
        server_log = log_lines(server)
    checks = tuple(probe_check(p, a) for p, a in zip(checked, answers, strict=True))
    return CaseResult(4, TITLES[4], checks, evidence={"server log": server_log})


CASE5_PROBES = (
    probes.NATIVE_HUGE_NUMBER,
    probes.NATIVE_DEEP_NESTING,
    probes.FUNASR_HUGE_NUMBER,
    probes.FUNASR_DEEP_NESTING,
    *probes.DUPLICATE_HEADERS,
    probes.EMPTY_FRAMES,
)


def case_bad_input(plan: FaultPlan) -> CaseResult:
    start = wire.Start("en", "zh", mode="cascade")
    pcm = _pcm(_clip(plan, SENTENCE_CLIP))
    with serving(plan.output, "case5", "--idle-timeout-s", f"{IDLE_TIMEOUT_S:g}") as server:
        answers = [asyncio.run(probe.send(server.port)) for probe in CASE5_PROBES]
        during_shutdown, streaming = asyncio.run(_upgrade_during_shutdown(server, start, pcm))
        _wait_exit(server)
        server_log = log_lines(server)
    checks = [probe_check(p, a) for p, a in zip(CASE5_PROBES, answers, strict=True)]
    expected = probes.refused_answer(503, ErrorCode.SHUTTING_DOWN)
    checks.append(Check(f"an upgrade during shutdown: {expected}", during_shutdown.summary() == expected,
                        during_shutdown.summary()))  # fmt: skip
    outcome = native_outcome("the session streaming at SIGTERM", start, streaming)
    return CaseResult(
        5, TITLES[5], tuple(checks), notes=(outcome.describe(),),
        evidence={"answers": [a.summary() for a in answers], "streaming at SIGTERM": asdict(outcome),
                  "server log": server_log},
    )  # fmt: skip


async def _upgrade_during_shutdown(
    server: Server, start: wire.Start, pcm: bytes
) -> tuple[probes.Answer, StreamResult | str]:
    """A session streams; SHUTDOWN_AT_S in, SIGTERM; a moment later, while the session finishes, an upgrade."""
    streaming = asyncio.create_task(stream_native(server.url, start, pcm))
    await _sigterm_after(server.process, SHUTDOWN_AT_S)
    await asyncio.sleep(SHUTDOWN_PROBE_DELAY_S)
    answer = await probes.raw_upgrade(server.port)
    return answer, await streaming


# ---------------------------------------------------------------------------------------
# Case 6: FunASR's own client under load


@dataclass(frozen=True)
class ClientRun:
    """One run of funasr_wss_client.py."""

    returncode: int | None  # None: killed at CLIENT_TIMEOUT_S
    wall_s: float  # from its start to its exit
    output: str  # its stdout and stderr
    events: tuple[dict[str, Any], ...]  # what it logged of each message (asr_logs/*/events.jsonl)
    n_refused_before: int = 0  # earlier runs refused with 503 (the server was saturated)

    @property
    def finals(self) -> tuple[str, ...]:
        return tuple(e["text"] for e in self.events if e.get("mode") == "2pass-offline" and e.get("text"))

    @property
    def acknowledged(self) -> bool:
        """The end acknowledgement came: the only `is_final` message without text."""
        return any(e.get("is_final") and not e.get("text") for e in self.events)

    @property
    def problems(self) -> list[str]:
        """The lines of its output that report a failure."""
        markers = ("Traceback", "Exception", "Error", "keepalive", "failed")
        return [line for line in self.output.splitlines() if any(m in line for m in markers)
                and not line.startswith("Namespace(")]  # fmt: skip

    @property
    def refused_busy(self) -> bool:
        return "HTTP 503" in self.output


def case_funasr_client(plan: FaultPlan) -> CaseResult:
    if plan.funasr_client is None:
        return CaseResult(6, TITLES[6], skipped="no --funasr-client given (FunASR's runtime/python/websocket/"
                                                "funasr_wss_client.py)")  # fmt: skip
    missing = missing_imports(plan.funasr_client)
    if missing:
        return CaseResult(6, TITLES[6], skipped=f"{plan.funasr_client} imports {', '.join(missing)}, not installed")
    wav = _clip(plan, CASE6_CLIP).audio_path
    flags = ("--mode", "cascade", "--funasr-source", "en", "--funasr-target", "zh")
    with serving(plan.output, "case6", *flags, funasr=True) as server:
        alone = run_funasr_client(plan.funasr_client, server, wav)
        loaded, load_note = asyncio.run(_under_load(server, plan, wav))
        server_log = log_lines(server)
    load_note += f"; the load clients' sessions (cut off once the client was done): {close_tally(server_log, 'native')}"
    baseline, outcome = _client_outcome(alone), _client_outcome(loaded)
    without = "on the unloaded server"
    checks = (
        _client_check(alone, without),
        _client_check(loaded, "under load"),
        same_finals(outcome, baseline, without),
    )
    notes = (load_note, compare_text(outcome, baseline, without))
    evidence = {"alone": asdict(alone), "under load": asdict(loaded), "server log": server_log}
    return CaseResult(6, TITLES[6], checks, notes, evidence)


def missing_imports(script: Path) -> list[str]:
    """Top-level modules the script imports at module level that this interpreter cannot find."""
    import ast
    import importlib.util

    tree = ast.parse(script.read_text(encoding="utf-8"))
    names = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
    return sorted(name for name in names if importlib.util.find_spec(name) is None)


def run_funasr_client(script: Path, server: Server, wav: Path | None) -> ClientRun:
    """FunASR's client, unchanged, from a temporary folder (where it writes asr_logs/), in 2pass
    mode on `wav`; retried (up to N_CLIENT_ATTEMPTS) when the server refuses it with 503 while busy."""
    run = ClientRun(None, 0.0, "", ())
    for attempt in range(N_CLIENT_ATTEMPTS):
        _wait_accepting(server.port)
        run = replace(_run_client_once(script, server, wav), n_refused_before=attempt)
        if not run.refused_busy:
            break
    return run


def _run_client_once(script: Path, server: Server, wav: Path | None) -> ClientRun:
    with tempfile.TemporaryDirectory(prefix="streamst-funasr-client-") as folder:
        copy = Path(folder) / script.name
        shutil.copyfile(script, copy)
        command = [sys.executable, str(copy), "--host", probes.LOOPBACK, "--port", str(server.funasr_port),
                   "--ssl", "0", "--mode", "2pass", "--audio_in", str(wav)]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        started_s = time.monotonic()
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
        try:
            output, _ = process.communicate(timeout=CLIENT_TIMEOUT_S)
            returncode: int | None = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its group: the client and the process it forks
            output, _ = process.communicate()
            returncode = None
        events = [json.loads(line) for path in sorted(Path(folder).glob("asr_logs/*/events.jsonl"))
                  for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]  # fmt: skip
    return ClientRun(returncode, time.monotonic() - started_s, output.decode("utf-8", "replace"), tuple(events))


def _wait_accepting(port: int) -> dict[str, Any]:
    """Polls /v1/status until it says `accepting` (within ACCEPT_WAIT_S); its last answer."""
    status: dict[str, Any] = {}
    for _ in range(round(ACCEPT_WAIT_S / STATUS_POLL_S)):
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"http://{probes.LOOPBACK}:{port}/v1/status", timeout=5) as response:
                status = json.loads(response.read())
            if status.get("accepting"):
                break
        time.sleep(STATUS_POLL_S)
    return status


async def _under_load(server: Server, plan: FaultPlan, wav: Path | None) -> tuple[ClientRun, str]:
    """N_LOAD_CLIENTS real-time cascade clients stream (the models busy ~85% on 2 cores, short of
    refusing sessions); once they have for LOAD_WARMUP_S, the FunASR client runs; then the load stops."""
    start = wire.Start("en", "zh", mode="cascade")
    streams = load.programmes(plan.clips, N_LOAD_CLIENTS, LOAD_AUDIO_S)
    loaders = asyncio.create_task(load.stream_programmes(server.url, start, streams))
    await asyncio.sleep(LOAD_WARMUP_S)
    status = await asyncio.to_thread(_wait_accepting, server.port)
    load_1m = os.getloadavg()[0]
    run = await asyncio.to_thread(run_funasr_client, plan.funasr_client, server, wav)
    loaders.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loaders
    await asyncio.sleep(LOG_SETTLE_S)
    note = (
        f"load: {N_LOAD_CLIENTS} real-time cascade clients; when the FunASR client started, "
        f"the models had been busy {status.get('utilisation', 0):.0%} of the last 10 s with "
        f"{status.get('sessions', '?')} sessions open, load average {load_1m:.1f} on {os.cpu_count()} cores"
        + (f"; {run.n_refused_before} earlier run(s) refused with HTTP 503" if run.n_refused_before else "")
    )
    return run, note



def _client_outcome(run: ClientRun) -> SessionOutcome:
    end = "ack" if run.acknowledged else "-"
    return SessionOutcome("funasr_wss_client.py 2pass en→zh", run.finals, None, end, (), None, "")


def _client_check(run: ClientRun, when: str) -> Check:
    problems = run.problems
    holds = run.returncode == 0 and run.acknowledged and not problems and bool(run.finals)
    seen = (
        f"exit {run.returncode} after {run.wall_s:.0f} s, {_finals(len(run.finals))}, "
        f"{'end acknowledged' if run.acknowledged else 'no end acknowledgement'}"
        + (f"; it printed: {' | '.join(problems[:4])}" if problems else "")
    )
    return Check(f"funasr_wss_client.py {when}: its finals and the end acknowledgement, no error", holds, seen)


# ---------------------------------------------------------------------------------------
# Report


def format_report(results: Sequence[CaseResult]) -> str:
    """Per case: each expectation with what happened, the notes; then the tally."""
    lines: list[str] = []
    for result in results:
        verdict = "skipped" if result.skipped else "holds" if result.holds else "DOES NOT HOLD"
        lines.append(f"case {result.number}: {result.title}: {verdict}")
        if result.skipped:
            lines.append(f"  skipped: {result.skipped}")
        for check in result.checks:
            lines.append(f"  [{'ok' if check.holds else 'FAIL'}] {check.expectation}")
            lines.append(f"         seen: {check.seen}")
        lines += [f"  note: {note}" for note in result.notes]
        lines.append("")
    ran = [r for r in results if not r.skipped]
    failing = [str(r.number) for r in ran if not r.holds]
    skipped = [str(r.number) for r in results if r.skipped]
    lines.append(
        f"{len(ran) - len(failing)} of {len(ran)} cases hold"
        + (f"; not holding: {', '.join(failing)}" if failing else "")
        + (f"; skipped: {', '.join(skipped)}" if skipped else "")
        + f" ({os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end)"
    )
    return "\n".join(lines) + "\n"


def all_hold(results: Sequence[CaseResult]) -> bool:
    """Every case that ran holds (skipped ones do not count)."""
    return all(r.holds for r in results if not r.skipped)


def save_json(results: Sequence[CaseResult], path: Path) -> None:
    data = [asdict(r) | {"holds": r.holds} for r in results]
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
