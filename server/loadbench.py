"""Load benchmark: N clients stream real speech at real-time pace for a minute, at once.

    python -m streamst.server.loadbench --clients 1,2,4,8 --duration-s 60

It starts `streamst-server` on a free port (or uses --url), and for each N runs N clients, each
streaming a programme of FLEURS clips (1 s of silence between them, each client starting at a
different clip). Per client it reports, over the clips it streamed (SimulEval instances):
LAAL (on the audio the server had consumed when a unit was committed) and CA LAAL (on the wall
clock when the client received it), the first-commit latency (clip start to the first committed
unit, wall clock), the lag behind real time (the worst `arrival − audio position` of any caption,
and how long after its last frame the session ended), and whether it kept up: it ended within
KEPT_UP_END_LAG_S of its audio. Not a test: a report for the documentation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from streamst.server import process as server_process
from streamst.server.client import StreamResult, stream_audio

from streamst import metrics, wire
from streamst.audio import decode_audio
from streamst.options import MODES
from streamst.types import SAMPLE_RATE_HZ

log = logging.getLogger("streamst.server.loadbench")

GAP_S = 1.0  # silence between clips, long enough for the VAD to close a segment
FRAME_MS = 100.0
KEPT_UP_END_LAG_S = 5.0
SERVER_START_TIMEOUT_S = 300.0
DATA_ENV = "STREAMST_DATA"


@dataclass(frozen=True)
class Clip:
    clip_id: str
    audio: np.ndarray  # (n_samples,) float32 at 16 kHz
    reference: str


@dataclass(frozen=True)
class Placed:
    """A clip at its place in a client's programme."""

    clip: Clip
    start_ms: float
    end_ms: float


@dataclass(frozen=True)
class ClientReport:
    n_clients: int
    client: int
    n_instances: int
    laal_ms: float | None
    laal_ca_ms: float | None
    first_commit_ca_ms: float | None
    max_lag_s: float
    end_lag_s: float
    kept_up: bool
    errors: str
    chrf: float | None


# programme ---------------------------------------------------------------------------------------------


def load_clips(data_dir: Path, source: str, target: str) -> list[Clip]:
    manifest = data_dir / "manifest.jsonl"
    if not manifest.exists():
        raise SystemExit(f"no FLEURS manifest at {manifest}; give --data or set ${DATA_ENV}")
    clips = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line) if line.strip() else None
        if entry and entry["src_lang"] == source and target in entry["references"]:
            clips.append(Clip(entry["id"], decode_audio(data_dir / entry["audio"]), entry["references"][target]))
    if not clips:
        raise SystemExit(f"no {source} clips with {target} references in {manifest}")
    return clips


def programme(clips: list[Clip], first: int, duration_s: float) -> tuple[np.ndarray, list[Placed]]:
    """Clips from index `first` on (cycling), with gaps, until `duration_s` is reached."""
    gap = np.zeros(int(GAP_S * SAMPLE_RATE_HZ), dtype=np.float32)
    pieces, placed = [], []
    n_samples = 0
    i = first
    while n_samples < duration_s * SAMPLE_RATE_HZ:
        clip = clips[i % len(clips)]
        start_ms = n_samples * 1000 / SAMPLE_RATE_HZ
        pieces += [clip.audio, gap]
        n_samples += clip.audio.size + gap.size
        placed.append(Placed(clip, start_ms, start_ms + clip.audio.size * 1000 / SAMPLE_RATE_HZ))
        i += 1
    return np.concatenate(pieces), placed


# scoring -----------------------------------------------------------------------------------------------


def score_client(n_clients: int, index: int, result: StreamResult, placed: list[Placed], target: str) -> ClientReport:
    unit = metrics.latency_unit(target)
    traces, hypotheses, references, first_commits = [], [], [], []
    for i, place in enumerate(placed):
        next_start = placed[i + 1].start_ms if i + 1 < len(placed) else float("inf")
        units, delays, elapsed = [], [], []
        for received in result.captions:
            caption = received.message
            if not (place.start_ms <= caption.start_ms < next_start) or not caption.committed_delta:
                continue
            new_units = metrics.units(caption.committed_delta, target)
            units += new_units
            delays += [max(0.0, caption.audio_ms - place.start_ms)] * len(new_units)
            elapsed += [max(received.at_s * 1000 - place.start_ms, delays[-1] if delays else 0.0)] * len(new_units)
        if place.end_ms > result.audio_s * 1000:
            continue
        hypotheses.append(metrics.join_units(units, unit))
        references.append(place.clip.reference)
        if not units:
            continue
        elapsed = list(np.maximum.accumulate(np.maximum(elapsed, delays)))
        trace = metrics.InstanceTrace(
            index=i,
            prediction_units=tuple(units),
            delays_ms=tuple(delays),
            elapsed_ms=tuple(elapsed),
            source_length_ms=place.end_ms - place.start_ms,
            reference=place.clip.reference,
            latency_unit=unit,
        )
        traces.append(trace)
        first_commits.append(elapsed[0])
    laal = [metrics.instance_latency(t).laal_ms for t in traces]
    laal_ca = [metrics.instance_latency(t, computation_aware=True).laal_ms for t in traces]
    end = next((r for r in result.messages if isinstance(r.message, wire.End)), None)
    end_lag_s = (end.at_s - result.audio_s) if end else float("inf")
    lags = [r.at_s - r.message.audio_ms / 1000 for r in result.captions]
    errors = ",".join(str(e.code) for e in result.errors)
    return ClientReport(
        n_clients=n_clients,
        client=index,
        n_instances=len(traces),
        laal_ms=_mean(laal),
        laal_ca_ms=_mean(laal_ca),
        first_commit_ca_ms=_mean(first_commits),
        max_lag_s=max(lags, default=0.0),
        end_lag_s=end_lag_s,
        kept_up=end is not None and not errors and end_lag_s <= KEPT_UP_END_LAG_S,
        errors=errors or "-",
        chrf=metrics.chrf(hypotheses, references).score if hypotheses else None,
    )


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


# running -----------------------------------------------------------------------------------------------


async def run_level(url: str, n_clients: int, clips: list[Clip], args: argparse.Namespace) -> list[ClientReport]:
    programmes = [programme(clips, first=i * 3, duration_s=args.duration_s) for i in range(n_clients)]
    streams = [
        stream_audio(url, audio, args.source, args.target, frame_ms=FRAME_MS, token=args.token, mode=args.mode)
        for audio, _ in programmes
    ]
    results = await asyncio.gather(*streams)
    return [
        score_client(n_clients, i, result, placed, args.target)
        for i, (result, (_, placed)) in enumerate(zip(results, programmes, strict=True))
    ]


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(reports: list[ClientReport]) -> None:
    header = (
        f"{'N':>2} {'client':>6} {'clips':>5} {'LAAL ms':>8} {'CA LAAL ms':>10} {'1st commit CA ms':>16} "
        f"{'max lag s':>9} {'end lag s':>9} {'chrF':>5} {'kept up':>7} errors"
    )
    print(header)
    print("-" * len(header))
    for r in reports:
        print(
            f"{r.n_clients:>2} {r.client:>6} {r.n_instances:>5} {_fmt(r.laal_ms):>8} {_fmt(r.laal_ca_ms):>10} "
            f"{_fmt(r.first_commit_ca_ms):>16} {r.max_lag_s:>9.1f} {r.end_lag_s:>9.1f} {_fmt(r.chrf, 1):>5} "
            f"{'yes' if r.kept_up else 'no':>7} {r.errors}"
        )
    levels = sorted({r.n_clients for r in reports})
    sustained = [n for n in levels if all(r.kept_up for r in reports if r.n_clients == n)]
    print(f"\nlargest N where every client kept up with real time: {max(sustained) if sustained else 'none'}")


@contextlib.contextmanager
def local_server(args: argparse.Namespace, max_clients: int):
    """`streamst-server` on a free port, sized so that no limit cuts the benchmark short."""
    port = server_process.free_port()
    options = (
        "--max-sessions", str(max_clients), "--max-backlog-ms", str(args.max_backlog_ms),
        "--model-concurrency", str(args.model_concurrency), "--threads", str(args.threads),
        "--idle-timeout-s", "600", "--finish-timeout-s", "3600", "--log-json",
    )  # fmt: skip
    try:
        with server_process.running(port, Path(args.server_log), *options, ready_timeout_s=SERVER_START_TIMEOUT_S):
            yield f"ws://127.0.0.1:{port}{wire.STREAM_PATH}"
    except server_process.ServerStartError as e:
        raise SystemExit(str(e)) from e


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streamst.server.loadbench", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="1,2,4,8", help="numbers of concurrent clients to try (%(default)s)")
    parser.add_argument("--duration-s", type=float, default=60.0, help="speech each client streams (%(default)s)")
    parser.add_argument("--source", default="en")
    parser.add_argument("--target", default="zh")
    parser.add_argument("--mode", choices=MODES, help="the mode each client asks for (default: the server's)")
    parser.add_argument("--data", type=Path, default=_default_data(), help="FLEURS-mini folder (manifest.jsonl)")
    parser.add_argument("--url", help="benchmark a running server's /v1/stream instead of starting one")
    parser.add_argument("--token", help="token for --url")
    parser.add_argument("--model-concurrency", type=int, default=1, help="for the server started here")
    parser.add_argument("--threads", type=int, default=2, help="threads per model call, for the server started here")
    parser.add_argument("--max-backlog-ms", type=int, default=600_000, help="for the server started here")
    parser.add_argument("--server-log", type=Path, default=Path("loadbench-server.log"))
    parser.add_argument("--json", type=Path, help="also write the per-client figures here")
    return parser


def _default_data() -> Path:
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]) / "fleurs-mini"
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "fleurs-mini"


async def run(args: argparse.Namespace, url: str, levels: list[int], clips: list[Clip]) -> list[ClientReport]:
    reports = []
    for n in levels:
        print(f"running {n} client(s) for {args.duration_s:g} s ...", file=sys.stderr, flush=True)
        reports += await run_level(url, n, clips, args)
    return reports


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    levels = [int(n) for n in args.clients.split(",")]
    clips = load_clips(args.data, args.source, args.target)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    if args.url:
        reports = asyncio.run(run(args, args.url, levels, clips))
    else:
        with local_server(args, max(levels)) as url:
            reports = asyncio.run(run(args, url, levels, clips))
    print_table(reports)
    load_1m, load_5m, _ = os.getloadavg()
    print(f"({args.source}→{args.target}, {args.mode or 'default'} mode, {len(clips)} FLEURS clips, {os.cpu_count()} CPU cores, "
          f"{time.monotonic() - started:.0f} s in all; load average before {load_before:.1f}, "
          f"after {load_1m:.1f} (1 min) / {load_5m:.1f} (5 min))")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in reports], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
