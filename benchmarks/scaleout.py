"""Scale-out: two `streamst-server` replicas behind HAProxy sharing one `llama-server`, against one
server with the decoder in-process, at the same numbers of real-time clients.

    streamst-bench scaleout --clients 1,2 --duration-s 60 -o out/scaleout

Everything runs on 127.0.0.1 and stops by itself. For each N: N clients stream FLEURS programmes
at real-time pace through the balancer (the load benchmark's clients and scoring,
`streamst.benchmarks.load`); the report has each client's CA LAAL and whether it kept up, how many
sessions each replica held at once, and the decoder's throughput over the level (from
llama-server's /metrics: prompt tokens it evaluated, tokens it generated, per second of wall
clock, and slot-seconds of work per second: above 1 while several slots work at once). Then the
same N against one `streamst-server` with the in-process decoder, for comparison.
Not a test: a report for docs/scaling.md."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from streamst import wire
from streamst.benchmarks import load
from streamst.benchmarks.datasets import Pair, SpeechInstance
from streamst.cores import default_concurrency
from streamst.engine import gguf_path
from streamst.presets import QUALITY_PRESETS, SERVER_QUALITY
from streamst.server import balancer, llama_server
from streamst.server import process as server_process

log = logging.getLogger("streamst.benchmarks.scaleout")

STATUS_POLL_S = 0.5
SCALEOUT = "2 replicas + llama-server"
IN_PROCESS = "1 server, in-process"
METRICS = ("prompt_tokens_total", "tokens_predicted_total", "prompt_seconds_total", "tokens_predicted_seconds_total")


@dataclass(frozen=True)
class ScaleoutPlan:
    pair: Pair  # what every client speaks and asks for
    levels: tuple[int, ...]  # numbers of concurrent clients, run in turn
    duration_s: float  # speech (and pauses) each client streams
    output: Path  # the servers' and the balancer's logs go here
    mode: str = "direct"
    n_threads: int = 1  # threads per model call in each streamst-server
    decoder: llama_server.LlamaServerOptions = field(default_factory=llama_server.LlamaServerOptions)
    compare_in_process: bool = True  # also run each N against one server with the decoder in-process
    translator_model: str = QUALITY_PRESETS[SERVER_QUALITY].steps  # the GGUF both setups decode with


@dataclass(frozen=True)
class DecoderThroughput:
    """What llama-server did during one level, from its /metrics counters."""

    n_prompt_tokens: int  # prompt tokens it evaluated (those its prefix cache did not hold)
    n_generated_tokens: int
    busy_s: float  # seconds its slots spent evaluating prompts and generating, summed over slots (may exceed wall_s)
    wall_s: float  # the level's wall clock

    @property
    def generated_per_s(self) -> float:
        return self.n_generated_tokens / self.wall_s if self.wall_s else 0.0

    @property
    def prompt_per_s(self) -> float:
        return self.n_prompt_tokens / self.wall_s if self.wall_s else 0.0


@dataclass(frozen=True)
class LevelResult:
    setup: str  # SCALEOUT or IN_PROCESS
    n_clients: int
    reports: tuple[load.ClientReport, ...]
    sessions_per_replica: tuple[int, ...]  # most sessions each replica held at once
    decoder: DecoderThroughput | None  # None in-process


def run_scaleout(plan: ScaleoutPlan, clips: Sequence[SpeechInstance], on_level: Callable[[str, int], None]) -> list[LevelResult]:
    """Every level on the scale-out setup, then (if asked) every level in-process."""
    results = []
    with scaleout_setup(plan) as (url, replica_ports, decoder_port):
        for n_clients in plan.levels:
            on_level(SCALEOUT, n_clients)
            results.append(_run_level(plan, url, n_clients, clips, replica_ports, decoder_port, SCALEOUT))
    if plan.compare_in_process:
        settings = load.ServerSettings(
            default_concurrency(plan.n_threads), plan.n_threads, 600_000, plan.output / "in-process.log"
        )
        with load.local_server(settings, max(plan.levels), "--translator", plan.translator_model) as server:
            for n_clients in plan.levels:
                on_level(IN_PROCESS, n_clients)
                results.append(_run_level(plan, server.url, n_clients, clips, (server.port,), None, IN_PROCESS))
    return results


@contextlib.contextmanager
def scaleout_setup(plan: ScaleoutPlan) -> Iterator[tuple[str, tuple[int, ...], int]]:
    """llama-server, two replicas using it, HAProxy in front: the balancer's /v1/stream URL, the
    replicas' ports and the decoder's port, for the block."""
    decoder_port = server_process.free_port()
    model = gguf_path(plan.translator_model)
    n_max = max(plan.levels)
    with llama_server.running(model, decoder_port, plan.output / "llama-server.log", plan.decoder):
        settings = [
            load.ServerSettings(default_concurrency(remote_translator=True), plan.n_threads, 600_000,
                                plan.output / f"replica{i}.log")
            for i in (1, 2)
        ]  # fmt: skip
        remote = ("--translator-url", llama_server.api_url(decoder_port), "--translator-api-model", plan.decoder.alias)
        with load.local_server(settings[0], n_max, *remote) as first, load.local_server(settings[1], n_max, *remote) as second:
            lb_port = server_process.free_port()
            ports = (first.port, second.port)
            with balancer.running(lb_port, ports, plan.output / "haproxy.log"):
                yield f"ws://127.0.0.1:{lb_port}{wire.STREAM_PATH}", ports, decoder_port


def _run_level(
    plan: ScaleoutPlan, url: str, n_clients: int, clips: Sequence[SpeechInstance],
    replica_ports: Sequence[int], decoder_port: int | None, setup: str,
) -> LevelResult:  # fmt: skip
    load_plan = load.LoadPlan(plan.pair, (n_clients,), plan.duration_s, _unused_settings(plan), plan.mode, url)
    before = decoder_metrics(decoder_port) if decoder_port else None
    started_s = time.monotonic()
    with SessionCounter(replica_ports) as counter:
        reports = asyncio.run(load.run_level(load_plan, url, n_clients, clips))
    wall_s = time.monotonic() - started_s
    decoder = None
    if decoder_port and before is not None:
        after = decoder_metrics(decoder_port)
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in METRICS}
        decoder = DecoderThroughput(
            n_prompt_tokens=int(delta["prompt_tokens_total"]),
            n_generated_tokens=int(delta["tokens_predicted_total"]),
            busy_s=delta["prompt_seconds_total"] + delta["tokens_predicted_seconds_total"],
            wall_s=wall_s,
        )
    return LevelResult(setup, n_clients, tuple(reports), counter.most, decoder)


def _unused_settings(plan: ScaleoutPlan) -> load.ServerSettings:
    """LoadPlan wants server settings; with a URL given they are never used."""
    return load.ServerSettings(1, plan.n_threads, 600_000, plan.output / "unused.log")


def decoder_metrics(port: int) -> dict[str, float]:
    """llama-server's Prometheus counters (`llamacpp:NAME`), by NAME."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode("utf-8", "replace")
    values = {}
    for match in re.finditer(r"^llamacpp:(\w+)\s+([0-9.eE+-]+)$", text, re.MULTILINE):
        values[match.group(1)] = float(match.group(2))
    return values


class SessionCounter:
    """Polls each replica's /v1/status in a thread; `most` holds the most sessions each held at once."""

    def __init__(self, ports: Sequence[int]) -> None:
        self._ports = tuple(ports)
        self.most = tuple(0 for _ in ports)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="session-counter", daemon=True)

    def __enter__(self) -> SessionCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _poll(self) -> None:
        while not self._stop.wait(STATUS_POLL_S):
            now = tuple(_sessions(port) for port in self._ports)
            self.most = tuple(max(a, b) for a, b in zip(self.most, now))


def _sessions(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=2) as response:
            return int(json.load(response)["sessions"])
    except (OSError, ValueError, KeyError):
        return 0


def format_report(plan: ScaleoutPlan, results: Sequence[LevelResult]) -> str:
    """Per client: CA LAAL, kept up; per level: sessions per replica, decoder throughput; then the
    largest N each setup kept up with."""
    header = (
        f"{'setup':<26} {'N':>2} {'client':>6} {'LAAL ms':>8} {'CA LAAL ms':>10} {'end lag s':>9} "
        f"{'chrF':>5} {'kept up':>7} errors"
    )
    lines = [header, "-" * len(header)]
    for level in results:
        for r in level.reports:
            lines.append(
                f"{level.setup:<26} {r.n_clients:>2} {r.client:>6} {load._fmt(r.laal_ms):>8} "
                f"{load._fmt(r.laal_ca_ms):>10} {r.end_lag_s:>9.1f} {load._fmt(r.chrf, 1):>5} "
                f"{'yes' if r.kept_up else 'no':>7} {r.errors}"
            )
    lines += ["", f"{'setup':<26} {'N':>2} {'sessions per replica':>20} {'decoder prompt tok/s':>20} "
              f"{'generated tok/s':>15} {'slot-s per s':>12}"]  # fmt: skip
    for level in results:
        d = level.decoder
        lines.append(
            f"{level.setup:<26} {level.n_clients:>2} {' + '.join(map(str, level.sessions_per_replica)):>20} "
            + (f"{d.prompt_per_s:>20.1f} {d.generated_per_s:>15.1f} {d.busy_s / d.wall_s:>12.2f}" if d else f"{'-':>20} {'-':>15} {'-':>12}")
        )
    lines.append("")
    for setup in (SCALEOUT, IN_PROCESS):
        levels = [lv for lv in results if lv.setup == setup]
        if levels:
            kept = [lv.n_clients for lv in levels if all(r.kept_up for r in lv.reports)]
            lines.append(f"{setup}: largest N where every client kept up with real time: {max(kept) if kept else 'none'}")
    lines.append(
        f"({plan.pair.source.code}→{plan.pair.target.code}, {plan.mode} mode, {plan.duration_s:g} s per client, "
        f"{plan.n_threads} thread(s) per model call in each streamst-server, llama-server {plan.decoder.n_threads} "
        f"thread(s) and {plan.decoder.n_slots} slots, decoder {plan.translator_model})"
    )
    return "\n".join(lines) + "\n"


def save_json(results: Sequence[LevelResult], path: Path) -> None:
    path.write_text(json.dumps([asdict(r) for r in results], indent=1), encoding="utf-8")
