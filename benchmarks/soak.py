"""Soak: healthy clients stream for a long while beside an abusive one. Does every healthy client
get every final, and does the server's memory stay flat?

    streamst-bench soak -o out/soak --duration-s 600 --clients 4

It starts `streamst-server` on a free port (as `load` does, with `--allow-origin` and a short idle
timeout so that every bad input meets its limit), has `--clients` clients stream FLEURS programmes
at real-time pace for `--duration-s` (`load`'s programmes and client, cascade mode by default: what
2 cores sustain for 4 clients), and one abusive client cycle through the bad inputs of
`probes.abuses` the whole time: bad and huge JSON, deep nesting, repeated headers, a foreign
origin, oversized and empty frames, connections dropped before and during a stream, a client that
never reads. It reports, per healthy client, the finals received against the segments its `end`
counts and any error; per bad input, what the server answered; and the server's resident memory
(VmRSS in /proc/PID/status) every RSS_PERIOD_S, after the first minute and at the end, with their
ratio, which must stay within RSS_TOLERANCE. Not a test: a report.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from streamst import wire
from streamst.audio import float32_to_pcm16
from streamst.benchmarks import load, probes
from streamst.benchmarks.datasets import Pair, SpeechInstance
from streamst.client.stream import StreamResult

RSS_PERIOD_S = 10.0  # server memory is sampled this often
RSS_BASELINE_S = 60.0  # the reference sample is the first one after this long
RSS_TOLERANCE = 0.10  # the last sample may differ from the reference by this fraction
ABUSE_PAUSE_S = 1.0  # between two bad inputs
PROBE_TIMEOUT_S = 120.0  # one bad input, whatever the server does
IDLE_TIMEOUT_S = 5.0  # the server's: healthy clients never pause, empty frames are cut off soon
GOOD_ORIGIN = "https://good.example"  # the one page origin the server allows
N_ABUSIVE_SLOTS = 4  # session slots beside the healthy clients' (dropped connections linger a moment)
DEFAULT_MODE = "cascade"
MODEL_CONCURRENCY, N_THREADS, MAX_BACKLOG_MS = 1, 2, 600_000  # the server's sizing: `load`'s defaults
BUSY = probes.refused_answer(503, wire.ErrorCode.SERVER_BUSY)  # a bad input refused before it was sent
KIB_PER_MIB = 1024


@dataclass(frozen=True)
class SoakPlan:
    pair: Pair  # what the healthy clients speak and ask for
    duration_s: float  # each healthy client's programme
    n_clients: int
    mode: str  # what the healthy clients ask for
    log_path: Path  # the server's output


@dataclass(frozen=True)
class HealthyReport:
    client: int
    n_clips: int  # clips in its programme
    n_finals: int  # finals received
    n_segments: int | None  # what its `end` counts; None without one
    end: str  # the `end` reason, "-" for none
    errors: str  # error codes, comma-separated; "-" for none
    kept_up: bool  # `load`'s criterion
    max_lag_s: float
    chrf: float | None

    @property
    def every_final(self) -> bool:
        return self.end == "stop" and self.errors == "-" and self.n_finals == self.n_segments and self.n_finals > 0


@dataclass(frozen=True)
class AbuseTally:
    name: str
    expected: str | None  # None: any answer but a crash
    answers: dict[str, int]  # answer summary → times

    @property
    def unexpected(self) -> dict[str, int]:
        """Answers other than the expected one and a busy server's refusal."""
        if self.expected is None:
            return {}
        return {a: n for a, n in self.answers.items() if a not in (self.expected, BUSY)}


@dataclass(frozen=True)
class RssReport:
    samples: tuple[tuple[float, int], ...]  # (seconds since the clients started, VmRSS in KiB)
    baseline_kib: int | None  # the first sample after RSS_BASELINE_S
    end_kib: int | None  # the last sample

    @property
    def ratio(self) -> float | None:
        return self.end_kib / self.baseline_kib if self.baseline_kib and self.end_kib else None

    @property
    def flat(self) -> bool:
        return self.ratio is not None and abs(self.ratio - 1) <= RSS_TOLERANCE


@dataclass(frozen=True)
class SoakResult:
    clients: tuple[HealthyReport, ...]
    abuses: tuple[AbuseTally, ...]
    rss: RssReport
    wall_s: float

    @property
    def holds(self) -> bool:
        return all(c.every_final for c in self.clients) and self.rss.flat and not any(a.unexpected for a in self.abuses)


# ---------------------------------------------------------------------------------------
# Running


def run_soak(plan: SoakPlan, clips: Sequence[SpeechInstance]) -> SoakResult:
    settings = load.ServerSettings(MODEL_CONCURRENCY, N_THREADS, MAX_BACKLOG_MS, plan.log_path)
    options = ("--idle-timeout-s", f"{IDLE_TIMEOUT_S:g}", "--allow-origin", GOOD_ORIGIN)
    with load.local_server(settings, plan.n_clients + N_ABUSIVE_SLOTS, *options) as server:
        return asyncio.run(_soak(plan, clips, server))


async def _soak(plan: SoakPlan, clips: Sequence[SpeechInstance], server: load.LocalServer) -> SoakResult:
    """The healthy clients, the abusive one and the memory sampler at once, until the healthy ones are done."""
    started_s = time.monotonic()
    pid = server.process.pid
    streams = load.programmes(clips, plan.n_clients, plan.duration_s)
    start = wire.Start(plan.pair.source.code, plan.pair.target.code, mode=plan.mode)
    healthy = asyncio.create_task(load.stream_programmes(server.url, start, streams))
    samples: list[tuple[float, int]] = []
    sampler = _sample_rss(pid, samples, started_s, healthy, _bound(plan, RSS_PERIOD_S))
    speech = float32_to_pcm16(min(clips, key=lambda c: c.duration_ms).load_audio())
    answers: list[tuple[probes.Probe, str]] = []
    abuser = _abuse(server.port, probes.abuses(speech), healthy, answers, _bound(plan, ABUSE_PAUSE_S))
    await asyncio.gather(healthy, sampler, abuser)
    samples.append((time.monotonic() - started_s, _vm_rss_kib(pid)))
    pairs = enumerate(zip(healthy.result(), streams, strict=True))
    return SoakResult(
        clients=tuple(_healthy_report(i, result, stream, plan.pair) for i, (result, stream) in pairs),
        abuses=_tally(answers),
        rss=_rss_report(samples),
        wall_s=time.monotonic() - started_s,
    )


def _bound(plan: SoakPlan, period_s: float) -> int:
    """How many times something done every `period_s` or less slowly may run: twice what fits."""
    return 2 * int(plan.duration_s / period_s) + 10


async def _abuse(
    port: int, inputs: Sequence[probes.Probe], healthy: asyncio.Task, answers: list[tuple[probes.Probe, str]],
    n_max: int,
) -> None:
    """The bad inputs in turn, round and round, until the healthy clients are done (`n_max` at most)."""
    for i in range(n_max):
        if healthy.done():
            return
        probe = inputs[i % len(inputs)]
        try:
            answer = (await asyncio.wait_for(probe.send(port), PROBE_TIMEOUT_S)).summary()
        except TimeoutError:
            answer = f"no answer within {PROBE_TIMEOUT_S:g} s"
        answers.append((probe, answer))
        await asyncio.sleep(ABUSE_PAUSE_S)


async def _sample_rss(
    pid: int, samples: list[tuple[float, int]], started_s: float, healthy: asyncio.Task, n_max: int
) -> None:
    """VmRSS every RSS_PERIOD_S until the healthy clients are done (`n_max` samples at most)."""
    for _ in range(n_max):
        samples.append((time.monotonic() - started_s, _vm_rss_kib(pid)))
        done, _ = await asyncio.wait({healthy}, timeout=RSS_PERIOD_S)
        if done:
            return


def _vm_rss_kib(pid: int) -> int:
    """The process's resident memory from /proc/PID/status ("VmRSS:  123456 kB"); 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------------------------------
# Figures


def _healthy_report(index: int, result: StreamResult, stream: SpeechInstance, pair: Pair) -> HealthyReport:
    scored = load.score_client(1, index, result, stream, pair)
    end = result.end
    return HealthyReport(
        client=index,
        n_clips=len(stream.segments),
        n_finals=len(result.finals),
        n_segments=end.n_segments if end else None,
        end=end.reason if end else "-",
        errors=scored.errors,
        kept_up=scored.kept_up,
        max_lag_s=scored.max_lag_s,
        chrf=scored.chrf,
    )


def _tally(answers: Sequence[tuple[probes.Probe, str]]) -> tuple[AbuseTally, ...]:
    """Per bad input (in the order first sent), how often the server gave each answer."""
    probes_by_name = {probe.name: probe for probe, _ in answers}
    counts = Counter((probe.name, answer) for probe, answer in answers)
    return tuple(
        AbuseTally(name, probe.expected, {a: n for (pn, a), n in counts.items() if pn == name})
        for name, probe in probes_by_name.items()
    )


def _rss_report(samples: Sequence[tuple[float, int]]) -> RssReport:
    after = [kib for t, kib in samples if t >= RSS_BASELINE_S]
    return RssReport(tuple(samples), after[0] if after else None, samples[-1][1] if samples else None)


# ---------------------------------------------------------------------------------------
# Report


def format_report(plan: SoakPlan, result: SoakResult) -> str:
    lines = [f"{'client':>6} {'clips':>5} {'finals':>6} {'segments':>8} {'end':>8} {'kept up':>7} "
             f"{'max lag s':>9} {'chrF':>5}  every final  errors"]  # fmt: skip
    for c in result.clients:
        lines.append(
            f"{c.client:>6} {c.n_clips:>5} {c.n_finals:>6} {_or_dash(c.n_segments):>8} {c.end:>8} "
            f"{'yes' if c.kept_up else 'no':>7} {c.max_lag_s:>9.1f} {_or_dash(c.chrf, '.1f'):>5}  "
            f"{'yes' if c.every_final else 'NO':<11}  {c.errors}"
        )
    lines += ["", "bad inputs (the abusive client's), what the server answered:"]
    for a in result.abuses:
        answered = "; ".join(f"{answer} x{n}" for answer, n in a.answers.items())
        verdict = "UNEXPECTED" if a.unexpected else "ok"
        lines.append(f"  [{verdict}] {a.name} (expected: {a.expected or 'anything but a crash'}): {answered}")
    lines += ["", _rss_line(result.rss)]
    n_ok = sum(c.every_final for c in result.clients)
    n_bad = sum(sum(a.answers.values()) for a in result.abuses)
    lines.append(
        f"{n_ok} of {len(result.clients)} healthy clients got every final; {n_bad} bad inputs sent; "
        f"{'holds' if result.holds else 'DOES NOT HOLD'} "
        f"({plan.pair.source.code}→{plan.pair.target.code}, {plan.mode}, {plan.duration_s:g} s, "
        f"{os.cpu_count()} CPU cores, {result.wall_s:.0f} s in all, load average {os.getloadavg()[0]:.1f} at the end)"
    )
    return "\n".join(lines) + "\n"


def _rss_line(rss: RssReport) -> str:
    if rss.ratio is None:
        return f"server RSS: no sample after {RSS_BASELINE_S:g} s (run longer than that)"
    series = " ".join(f"{kib / KIB_PER_MIB:.0f}" for _, kib in rss.samples)
    return (
        f"server RSS: {rss.baseline_kib / KIB_PER_MIB:.1f} MiB after the first minute, "
        f"{rss.end_kib / KIB_PER_MIB:.1f} MiB at the end: ratio {rss.ratio:.3f} "
        f"({'within' if rss.flat else 'NOT within'} {RSS_TOLERANCE:.0%}); every {RSS_PERIOD_S:g} s (MiB): {series}"
    )


def _or_dash(value: float | int | None, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def save_json(result: SoakResult, path: Path) -> None:
    data = asdict(result) | {"holds": result.holds, "rss_ratio": result.rss.ratio}
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
