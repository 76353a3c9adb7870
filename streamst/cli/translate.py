"""`streamst translate AUDIO`: stream a file through the engine and print events as they happen."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from typing import TextIO

import numpy as np

from streamst.audio import decode_audio
from streamst.clock import WallClock
from streamst.engine import Engine, EngineConfig
from streamst.errors import AudioError, OptionsError
from streamst.presets import add_translator_arguments, decoders, translator_server
from streamst.options import DEFAULT_MODE, MODES, SessionOptions, policy_spec, session_options
from streamst.subtitles import VTT_HEADER, srt_cue, vtt_cue
from streamst.types import SAMPLE_RATE_HZ, Event, FinalEvent, ms_to_samples
from streamst.vad import VADOptions

log = logging.getLogger("streamst.cli.translate")

FORMATS = ("text", "jsonl", "srt", "vtt")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("translate", help="translate speech in an audio file, streamed as if live")
    p.add_argument("audio", help="audio file (wav, flac, ogg/opus, mp3, ...)")
    p.add_argument("--source", "-s", required=True, help="spoken language, e.g. en, de, zh")
    p.add_argument("--target", "-t", required=True, help="translation language, e.g. zh, en, ja")
    p.add_argument("--mode", default=DEFAULT_MODE, choices=tuple(MODES), help="translation path (default: %(default)s)")
    p.add_argument("--policy", choices=_POLICY_NAMES, help="when to commit: " + "; ".join(
        f"{m.name}: {', '.join(q.name for q in m.policies)} (default {m.default_policy.name})" for m in MODES.values()))
    for knob in _KNOBS.values():
        p.add_argument(f"--{knob.name}", type=knob.kind, help=f"{_knob_owner(knob.name)}: {knob.help} "
                       f"({knob.range_text}; default {knob.default:g})")  # fmt: skip
    p.add_argument("--realtime", action="store_true", help="pace the file at 1x speed, as a live speaker")
    p.add_argument("--format", "-f", default="text", choices=FORMATS, help="output format (default: text)")
    p.add_argument("--output", "-o", help="write output to this file instead of stdout")
    p.add_argument("--chunk-ms", type=int, default=100, help="audio fed per push, in ms (default: 100)")
    p.add_argument("--step-ms", type=int, help="re-transcribe every N ms (default: " + ", ".join(
        f"{m.options_type.step_ms} {m.name}" for m in MODES.values()) + ")")
    p.add_argument("--min-silence-ms", type=int, default=VADOptions.min_silence_ms, help="silence ending a segment")
    p.add_argument("--max-segment-ms", type=int, default=VADOptions.max_segment_ms, help="longest segment")
    p.add_argument("--vad-threshold", type=float, default=VADOptions.threshold, help="speech probability")
    p.add_argument("--encoder", default=EngineConfig.encoder_model, help="speech encoder model name")
    p.add_argument("--context-sentences", type=int, default=0, metavar="N",
                   help="show the translator the talk's last N sentences with their translations, so names and "
                        "terms keep their translation (default: 0; benchmarks/QUALITY.md has what it does)")  # fmt: skip
    add_translator_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    Engine.check_pair(args.source, args.target)
    chosen = decoders(args.translator, args.quality)
    options = session_options(
        args.mode,
        policy=args.policy,
        knob=_knob(args),
        step_ms=args.step_ms,
        vad=VADOptions(
            threshold=args.vad_threshold,
            neg_threshold=min(VADOptions.neg_threshold, args.vad_threshold),
            min_silence_ms=args.min_silence_ms,
            max_segment_ms=args.max_segment_ms,
        ),
        realtime=args.realtime,
    )
    options = dataclasses.replace(options, translation_context=args.context_sentences)
    if args.chunk_ms < 10:
        raise AudioError(f"--chunk-ms must be at least 10, got {args.chunk_ms}")
    audio = decode_audio(args.audio)
    engine = Engine(
        EngineConfig(
            encoder_model=args.encoder,
            translator_model=chosen.steps,
            finals_model=chosen.finals,
            translator_server=translator_server(args),
        )
    )
    engine.load()
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        printer = EventPrinter(args.format, out, sys.stderr)
        started_s = time.monotonic()
        n_finals = stream_file(engine, audio, args, options, printer)
        elapsed_s = time.monotonic() - started_s
    finally:
        if args.output:
            out.close()
    audio_s = len(audio) / SAMPLE_RATE_HZ
    print(
        f"streamst: {audio_s:.1f} s of audio in {elapsed_s:.1f} s (RTF {elapsed_s / audio_s:.2f}), "
        f"{n_finals} segment(s)",
        file=sys.stderr,
    )
    if n_finals == 0:
        raise AudioError(f"no speech found in {args.audio}; nothing was translated")
    return 0


# The knobs that get their own flag: each direct policy's (--k, --n, --tau). The cascade's knobs are
# settings that already have one (--step-ms, --min-silence-ms).
_POLICY_NAMES = tuple(dict.fromkeys(p.name for m in MODES.values() for p in m.policies))
_KNOBS = {p.knob.name: p.knob for p in MODES["direct"].policies}


def _knob_owner(knob_name: str) -> str:
    return ", ".join(p.name for p in MODES["direct"].policies if p.knob.name == knob_name)


def _knob(args: argparse.Namespace) -> float | None:
    """The knob of the chosen policy; a knob of another policy is a mistake worth naming."""
    given = {name: getattr(args, name) for name in _KNOBS if getattr(args, name) is not None}
    if not given:
        return None
    spec = policy_spec(args.mode, args.policy)
    wrong = [name for name in given if name != spec.knob.name]
    if wrong:
        flag = spec.knob.name.replace("_", "-")
        raise OptionsError(f"--{wrong[0]} does not apply to {spec.label}; its knob is --{flag}")
    return given[spec.knob.name]


def stream_file(
    engine: Engine,
    audio: np.ndarray,
    args: argparse.Namespace,
    options: SessionOptions,
    printer: EventPrinter,
) -> int:
    """Feeds the audio in chunks (paced at 1x with --realtime); returns the number of spoken finals."""
    clock = WallClock()
    session = engine.session(args.source, args.target, mode=args.mode, clock=clock, options=options)
    chunk = ms_to_samples(args.chunk_ms)
    for i, start in enumerate(range(0, len(audio), chunk)):
        if args.realtime:
            lag_s = i * args.chunk_ms / 1000 - clock.now_ms() / 1000
            if lag_s > 0:
                time.sleep(lag_s)
        printer.show(session.push(audio[start : start + chunk]))
    printer.show(session.finish())
    printer.close()
    return printer.n_finals


class EventPrinter:
    """Writes events in one of FORMATS; partials go to the terminal (stderr) only in text format."""

    def __init__(self, fmt: str, out: TextIO, status: TextIO) -> None:
        self.fmt = fmt
        self.out = out
        self.status = status
        self.n_finals = 0
        self._status_live = status.isatty()
        self._partial_shown = False
        if fmt == "vtt":
            out.write(VTT_HEADER)

    def show(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, FinalEvent) and event.source_text:
                self.n_finals += 1
            getattr(self, f"_{self.fmt}")(event)
        self.out.flush()

    def close(self) -> None:
        self._clear_partial()

    def _text(self, event: Event) -> None:
        if not isinstance(event, FinalEvent):
            if self._status_live:
                line = (
                    f"{event.committed_text}\x1b[2m{event.tentative_text}\x1b[0m"
                    if event.committed_text or event.tentative_text
                    else f"\x1b[2m… {event.source_text}\x1b[0m"
                )
                self.status.write(f"\r\x1b[2K{line[-160:]}")
                self.status.flush()
                self._partial_shown = True
            return
        self._clear_partial()
        if event.source_text:
            start, end = event.start_ms / 1000, event.end_ms / 1000
            self.out.write(f"[{start:7.2f} → {end:7.2f}] {event.committed_text}\n")
            self.out.write(f"{'':21}({event.source_text})\n")

    def _jsonl(self, event: Event) -> None:
        self.out.write(json.dumps(dataclasses.asdict(event) | {"kind": event.kind}, ensure_ascii=False) + "\n")

    def _srt(self, event: Event) -> None:
        if isinstance(event, FinalEvent) and event.source_text:
            self.out.write(srt_cue(self.n_finals, event))

    def _vtt(self, event: Event) -> None:
        if isinstance(event, FinalEvent) and event.source_text:
            self.out.write(vtt_cue(event))

    def _clear_partial(self) -> None:
        if self._partial_shown:
            self.status.write("\r\x1b[2K")
            self.status.flush()
            self._partial_shown = False
