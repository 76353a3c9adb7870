"""`streamst-bench`: latency against quality retention, scored the way the field scores.

streamst-bench run --pairs en-de,zh-en --limit 2 -o out/quick
streamst-bench mt --pairs en-zh,zh-en --limit 200 -o out/mt
streamst-bench report out/quick out/mt --results benchmarks/RESULTS.md --curve benchmarks/curve.png
streamst-bench compare out/before out/after     # same committed text per instance?
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from streamst.benchmarks import datasets, report, results
from streamst.benchmarks.runner import CLOCKS, DEFAULT_CHUNK_MS, RunSpec, StreamSettings

from streamst.cores import default_concurrency, default_threads
from streamst.encoders.whisper import WhisperOptions
from streamst.engine import EngineConfig
from streamst.errors import OptionsError, StreamstError
from streamst.options import DEFAULT_MODE, MODES, mode_spec, session_options
from streamst.presets import add_translator_arguments, decoders, translator_server
from streamst.translators.llama_cpp import LlamaOptions

log = logging.getLogger("streamst.benchmarks.cli")

PROG = "streamst-bench"
DEFAULT_SPEECH_PAIRS = "de-en,fr-en,es-en,zh-en,ja-en,en-zh,en-ja,en-de,en-es"
DEFAULT_MT_PAIRS = "en-zh,zh-en,en-de,de-en,en-ja,ja-en"
REPORT_NAME = "report.md"
CURVE_NAME = "curve.png"


class UsageError(StreamstError):
    """A command-line argument is missing or malformed."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


# ---------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _add_run(subparsers)
    _add_mt(subparsers)
    _add_report(subparsers)
    _add_load(subparsers)
    _add_scaleout(subparsers)
    _add_compare(subparsers)
    _add_faults(subparsers)
    _add_soak(subparsers)
    _add_profile(subparsers)
    return parser


def _add_profile(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("profile", help="where a step's time goes, with 1, 2, 4 streams at once")
    p.add_argument("--pair", default="en-zh", help="the language pair every stream speaks (default: %(default)s)")
    p.add_argument("--streams", default="1,2,4", help="numbers of streams at once, in turn (default: %(default)s)")
    p.add_argument("--mode", default=DEFAULT_MODE, choices=tuple(MODES), help="(default: %(default)s)")
    p.add_argument("--policy", help="the mode's policy (default: its first)")
    p.add_argument("--knob", type=float, help="the policy's knob (default: its default)")
    p.add_argument("--threads", type=_positive_int, default=default_threads(),
                   help="threads per model call (default: %(default)s, half the cores)")  # fmt: skip
    p.add_argument("--translator-slots", type=_positive_int, default=LlamaOptions().n_streams,
                   help="streams whose translator prompts stay cached at once (default: %(default)s; "
                        "1: one KV cache that every stream's request replaces)")  # fmt: skip
    add_translator_arguments(p)
    p.add_argument("--data-dir", help=f"evaluation data folder (default: ${datasets.DATA_DIR_ENV} or ../shared/data)")
    p.add_argument("--output", "-o", required=True, help="output folder: profile.txt, profile.json")
    p.set_defaults(func=cmd_profile)


def _add_compare(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare", help="did a change alter what was committed? compare two run folders")
    p.add_argument("old", help="output folder of `run` before the change")
    p.add_argument("new", help="output folder of `run` after the change, same command")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Exit 0 when every shared instance has the same committed text and delays, 1 otherwise."""
    from streamst.benchmarks.compare import compare_folders, render

    old, new = Path(args.old), Path(args.new)
    for folder in (old, new):
        if not folder.is_dir():
            raise UsageError(f"{folder} is not a folder; give two output folders of `{PROG} run`")
    comparison = compare_folders(old, new)
    if comparison.n_instances == 0:
        raise UsageError(f"{old} and {new} share no instance log; give output folders of the same `{PROG} run`")
    print(render(comparison))
    return 0 if comparison.same else 1


def _add_common(p: argparse.ArgumentParser, default_pairs: str) -> None:
    p.add_argument("--pairs", default=default_pairs, help=f"language pairs, comma-separated (default: {default_pairs})")
    p.add_argument("--limit", type=_positive_int, help="at most N instances (sentences) per pair")
    p.add_argument("--data-dir", help=f"evaluation data folder (default: ${datasets.DATA_DIR_ENV} or ../shared/data)")
    p.add_argument("--output", "-o", required=True, help="output folder (created if needed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=_positive_int, default=default_threads(),
                   help="threads per model call (default: %(default)s, half the cores)")  # fmt: skip
    add_translator_arguments(p)
    p.add_argument("--no-target-fidelity", dest="target_fidelity", action="store_false",
                   help="translate without the wrong-script token mask and the retry of copies of the source, "
                        "to measure what they do")  # fmt: skip


def _engine_config(args: argparse.Namespace, llama: LlamaOptions | None = None) -> EngineConfig:
    """The engine the options ask for: threads per call, decoder, and its options."""
    llama = llama or LlamaOptions()
    if not getattr(args, "target_fidelity", True):
        llama = dataclasses.replace(llama, target_fidelity=False)
    whisper = WhisperOptions()
    if getattr(args, "final_beam_size", None):
        whisper = dataclasses.replace(whisper, final_beam_size=args.final_beam_size)
    chosen = decoders(args.translator, args.quality)
    return EngineConfig(
        n_threads=args.threads,
        translator_model=chosen.steps,
        finals_model=chosen.finals,
        translator_server=translator_server(args),
        llama=llama,
        whisper=whisper,
    )


def _add_run(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="stream speech through the engine and score latency and quality")
    _add_common(p, DEFAULT_SPEECH_PAIRS)
    p.add_argument("--dataset", default=datasets.FLEURS_MINI, choices=datasets.SPEECH_DATASETS)
    p.add_argument("--modes", default=DEFAULT_MODE, help=f"modes, comma-separated (default: %(default)s; known: {', '.join(MODES)})")
    p.add_argument("--policies", help=f"policies, comma-separated (default: each mode's first): {_policy_help()}")
    p.add_argument("--knobs", help="latency knob values, comma-separated (default: each policy's sweep values)")
    p.add_argument("--clock", default="simulated", choices=CLOCKS, help="simulated (exact) or wall (1x live)")
    p.add_argument("--chunk-ms", type=_positive_int, default=DEFAULT_CHUNK_MS, help="audio per push in ms")
    p.add_argument("--no-offline", action="store_true", help="skip the offline reference (no retention)")
    p.add_argument("--final-beam-size", type=_positive_int,
                   help=f"Whisper's beam for the last transcription of a closed segment and the offline reference "
                        f"(default: {WhisperOptions().final_beam_size}; 1 = greedy, as the streaming steps)")  # fmt: skip
    p.add_argument(
        "--curve-metric", choices=("bleu", "chrf"), help="plot only this retention (default: BLEU and chrF)"
    )
    p.set_defaults(func=cmd_run)


def _add_mt(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("mt", help="the translator alone on parallel text: BLEU, chrF, tokens/s")
    _add_common(p, DEFAULT_MT_PAIRS)
    p.add_argument("--dataset", default=datasets.FLORES_DEVTEST, choices=datasets.TEXT_DATASETS)
    p.add_argument("--context", type=_count, default=0,
                   help="show the translator the N sentences before each one with their translations, "
                        "as a talk's earlier sentences (default: 0)")  # fmt: skip
    p.add_argument("--few-shot", type=_count, default=0,
                   help=f"show the translator N example translations first, drawn from {datasets.WMT22} "
                        "(never from the evaluated set; default: 0)")  # fmt: skip
    p.set_defaults(func=cmd_mt)


def _add_report(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="merge output folders into RESULTS.md and curve.png")
    p.add_argument("folders", nargs="+", help="output folders of `run` and `mt`")
    p.add_argument("--results", required=True, help="markdown file to write, e.g. benchmarks/RESULTS.md")
    p.add_argument("--curve", help="curve to write (default: curve.png beside --results)")
    p.add_argument(
        "--curve-metric", choices=("bleu", "chrf"), help="plot only this retention (default: BLEU and chrF)"
    )
    p.add_argument("--note", action="append", default=[], help="a line about the machine or conditions (repeatable)")
    p.add_argument("--label", action="append", default=[],
                   help="a name for each folder, in their order, shown beside its runs (repeatable; e.g. "
                        "to compare two revisions or decoders run with the same settings)")  # fmt: skip
    p.set_defaults(func=cmd_report)


def _add_load(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("load", help="N live clients at once against one streamst-server: latency, capacity")
    p.add_argument("--clients", default="1,2,4,8", help="numbers of concurrent clients, in turn (default: 1,2,4,8)")
    p.add_argument("--duration-s", type=float, default=60.0, help="audio each client streams (default: 60)")
    p.add_argument("--source", default="en", help="language every client speaks (default: en)")
    p.add_argument("--target", default="zh", help="language every client asks for (default: zh)")
    p.add_argument("--mode", choices=tuple(MODES), help="the mode each client asks for (default: the server's)")
    p.add_argument("--data-dir", help=f"evaluation data folder (default: ${datasets.DATA_DIR_ENV} or ../shared/data)")
    p.add_argument("--output", "-o", required=True, help="output folder: load.txt, load.json, server.log")
    p.add_argument("--url", help="load a running server's /v1/stream instead of starting one")
    p.add_argument("--token", help="token for --url")
    p.add_argument("--model-concurrency", type=_positive_int, default=default_concurrency(default_threads()),
                   help="for the server started here (default: %(default)s)")
    p.add_argument("--threads", type=_positive_int, default=default_threads(),
                   help="threads per model call, for the server here (default: %(default)s)")
    p.add_argument("--max-backlog-ms", type=_positive_int, default=600_000, help="for the server started here")
    p.set_defaults(func=cmd_load)


def _add_scaleout(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "scaleout", help="2 replicas behind HAProxy sharing one llama-server, against one in-process server"
    )
    p.add_argument("--clients", default="1,2", help="numbers of concurrent clients, in turn (default: 1,2)")
    p.add_argument("--duration-s", type=float, default=60.0, help="audio each client streams (default: 60)")
    p.add_argument("--source", default="en", help="language every client speaks (default: en)")
    p.add_argument("--target", default="zh", help="language every client asks for (default: zh)")
    p.add_argument("--mode", choices=tuple(MODES), default="direct", help="the mode each client asks for (default: direct)")
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="threads per model call in each streamst-server (default: 1)")  # fmt: skip
    p.add_argument("--decoder-threads", type=_positive_int, default=1, help="llama-server's threads (default: 1)")
    p.add_argument("--decoder-slots", type=_positive_int, help="llama-server's slots (default: the largest N)")
    p.add_argument("--no-compare", action="store_true", help="skip the run against one in-process server")
    p.add_argument("--data-dir", help=f"evaluation data folder (default: ${datasets.DATA_DIR_ENV} or ../shared/data)")
    p.add_argument("--output", "-o", required=True,
                   help="output folder: scaleout.txt, scaleout.json and every process's log")  # fmt: skip
    p.set_defaults(func=cmd_scaleout)


def _add_faults(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("faults", help="replay the server's known failures on 127.0.0.1; exit 1 if one is back")
    p.add_argument(
        "--cases",
        help="which cases, comma-separated (default: all): 1 SIGTERM while streaming, 2 finish timeout, "
        "3 flooders beside a 1x client, 4 foreign origin, 5 bad input and shutdown, 6 FunASR's client under load",
    )
    p.add_argument(
        "--funasr-client",
        help="FunASR's runtime/python/websocket/funasr_wss_client.py, run unchanged from a temporary folder "
        "for case 6 (without it, case 6 is skipped)",
    )
    p.add_argument("--data-dir", help=f"evaluation data folder (default: ${datasets.DATA_DIR_ENV} or ../shared/data)")
    p.add_argument("--output", "-o", required=True, help="output folder: faults.txt, faults.json, the servers' logs")
    p.set_defaults(func=cmd_faults)


def _add_soak(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("soak", help="live clients for a long while beside an abusive one: finals, memory")
    p.add_argument("--duration-s", type=float, default=600.0, help="audio each client streams (default: 600)")
    p.add_argument("--clients", type=_positive_int, default=4, help="healthy real-time clients (default: 4)")
    p.add_argument("--source", default="en", help="language every client speaks (default: en)")
    p.add_argument("--target", default="zh", help="language every client asks for (default: zh)")
    p.add_argument("--mode", choices=tuple(MODES), default="cascade", help="the mode each client asks for "
                   "(default: cascade, the one 2 cores sustain for 4 clients)")  # fmt: skip
    p.add_argument("--data-dir", help=f"evaluation data folder (default: ${datasets.DATA_DIR_ENV} or ../shared/data)")
    p.add_argument("--output", "-o", required=True, help="output folder: soak.txt, soak.json, server.log")
    p.set_defaults(func=cmd_soak)


def _policy_help() -> str:
    return "; ".join(
        f"{p.label}: {p.help} ({p.knob.name}: default {p.knob.default:g}, "
        f"sweep {','.join(f'{v:g}' for v in p.knob.sweep)})"
        for mode in MODES.values()
        for p in mode.policies
    )


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
    return value


def _count(text: str) -> int:
    return _whole_number(text, 0)


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _items(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


# ---------------------------------------------------------------------------------------
# Plans


def run_specs(modes: str, policies: str | None, knobs: str | None, pairs: Sequence[datasets.Pair]) -> list[RunSpec]:
    """Every (mode, policy, knob) on every pair; raises UsageError naming a bad value."""
    mode_names = _items(modes)
    if not mode_names:
        raise UsageError("--modes is empty; give at least one mode, e.g. --modes cascade")
    knob_values = _parse_knobs(knobs)
    specs = []
    for mode in mode_names:
        try:
            spec = mode_spec(mode)
        except OptionsError as e:
            raise UsageError(str(e)) from e
        known = [p.name for p in spec.policies]
        names = _items(policies) or [spec.default_policy.name]
        unknown = [name for name in names if name not in known]
        if unknown and len(mode_names) == 1:
            raise UsageError(f"unknown policy {unknown[0]!r} for mode {mode}; choose from: {', '.join(known)}")
        for name in (n for n in names if n in known):
            for knob in knob_values or spec.policy(name).knob.sweep:
                _check_options(mode, name, knob)
                specs += [RunSpec(mode, name, knob, pair) for pair in pairs]
    if not specs:
        raise UsageError(f"no policy in {policies!r} belongs to the modes {modes!r}")
    return specs


def _parse_knobs(text: str | None) -> list[float]:
    values = []
    for item in _items(text):
        try:
            values.append(float(item))
        except ValueError:
            raise UsageError(f"knob {item!r} is not a number; write e.g. --knobs 500,1000,2000") from None
    return values


def _check_options(mode: str, policy: str, knob: float) -> None:
    try:
        session_options(mode, policy, knob)
    except OptionsError as e:
        raise UsageError(f"knob {knob:g} does not suit {mode}/{policy}: {e}") from e


def _engine_models(config: EngineConfig) -> dict[str, str]:
    return {
        "VAD": config.vad_model,
        "speech encoder": config.encoder_model,
        "translator": config.translator_model,
        "finals translator": config.finals_decoder,
    }


def _progress(total: int, enabled: bool, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit=unit, dynamic_ncols=True, mininterval=1.0, file=sys.stderr)


# ---------------------------------------------------------------------------------------
# Commands


def cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from streamst.benchmarks.plot import draw_curve
    from streamst.benchmarks.suite import SuitePlan, run_suite

    from streamst.engine import Engine

    pairs = datasets.parse_pairs(args.pairs)
    specs = run_specs(args.modes, args.policies, args.knobs, pairs)
    settings = StreamSettings(clock=args.clock, chunk_ms=args.chunk_ms)
    instances = datasets.load_speech(args.dataset, pairs, limit=args.limit, root=args.data_dir)
    plan = SuitePlan(tuple(specs), instances, settings, offline=not args.no_offline)
    config = _engine_config(args)
    engine = Engine(config)
    engine.load()
    output = Path(args.output)
    meta = results.make_meta(argv, args.dataset, args.clock, args.chunk_ms, _engine_models(config))
    with _progress(plan.n_steps, not args.no_progress, "clip") as bar:

        def step(label: str) -> None:
            bar.set_description(label)
            bar.update(1)

        def save_so_far(runs: tuple) -> None:
            results.save(results.BenchResults(meta, runs=runs), output)

        runs = run_suite(engine, plan, output, step, save_so_far)
    bench = results.BenchResults(meta, runs=runs)
    results.save(bench, output)
    (output / REPORT_NAME).write_text(report.folder_report(bench), encoding="utf-8")
    if not args.no_offline:
        draw_curve(runs, output / CURVE_NAME, _curve_metrics(args))
    _print_signatures(runs)
    print(f"{PROG}: wrote {output / results.SCORES_NAME}, {output / REPORT_NAME}", file=sys.stderr)
    return 0


def _curve_metrics(args: argparse.Namespace) -> tuple[str, ...]:
    return (args.curve_metric,) if args.curve_metric else ("bleu", "chrf")


def _print_signatures(runs: Sequence) -> None:
    for signature in dict.fromkeys(s for r in runs for s in (r.quality.bleu_signature, r.quality.chrf_signature)):
        print(f"sacrebleu signature: {signature}")


def cmd_mt(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from streamst.benchmarks.mt import translate_corpus

    from streamst.engine import Engine

    pairs = datasets.parse_pairs(args.pairs)
    if args.few_shot and args.dataset == datasets.WMT22:
        raise OptionsError(f"--few-shot draws its examples from {datasets.WMT22}; evaluate on another dataset")
    corpora = {p.name: datasets.load_text_pairs(args.dataset, p, args.limit, args.data_dir) for p in pairs}
    examples = {p.name: datasets.few_shot_examples(p, args.few_shot, args.data_dir) for p in pairs}
    config = _engine_config(args)
    translator = Engine(config).load().final_translator  # whole sentences: what finals translate
    output = Path(args.output)
    hypotheses_dir = output / "mt" / args.dataset
    hypotheses_dir.mkdir(parents=True, exist_ok=True)
    meta = results.make_meta(argv, args.dataset, "", 0, {"translator": config.finals_decoder})
    scores = []
    with _progress(sum(len(c) for c in corpora.values()), not args.no_progress, "sent") as bar:
        for pair in pairs:
            bar.set_description(f"{args.dataset} {pair.name}")
            result = translate_corpus(
                translator, args.dataset, pair, corpora[pair.name], lambda: bar.update(1), examples[pair.name], args.context
            )
            (hypotheses_dir / f"{pair.name}.txt").write_text("\n".join(result.hypotheses) + "\n", encoding="utf-8")
            scores.append(result.scores)
            results.save(results.BenchResults(meta, mt=tuple(scores)), output)
            bar.write(
                f"{pair.name}: BLEU {result.scores.quality.bleu:.1f} chrF {result.scores.quality.chrf:.1f} "
                f"{result.scores.tokens_per_s:.1f} tok/s [{result.scores.quality.bleu_signature}]"
            )
    bench = results.BenchResults(meta, mt=tuple(scores))
    (output / REPORT_NAME).write_text(report.folder_report(bench), encoding="utf-8")
    print(f"{PROG}: wrote {output / results.SCORES_NAME}, {output / REPORT_NAME}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from streamst.benchmarks.plot import draw_curve

    if args.label and len(args.label) != len(args.folders):
        raise UsageError(f"give one --label per folder: {len(args.folders)} folders, {len(args.label)} labels")
    loaded = tuple(
        _labelled(results.load(folder), label) for folder, label in zip(args.folders, args.label or [""] * len(args.folders))
    )
    results_path = Path(args.results)
    curve_path = Path(args.curve) if args.curve else results_path.with_name(CURVE_NAME)
    runs = [r for res in loaded for r in res.runs]
    if runs:
        draw_curve(runs, curve_path, _curve_metrics(args))
    document = report.ResultsDocument(
        results=loaded,
        report_command=results.command_line(argv),
        curve_name=_relative_name(curve_path, results_path),
        machine_notes=tuple(args.note),
        headline_knobs=default_knobs(),
    )
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(report.results_document(document), encoding="utf-8")
    print(f"{PROG}: wrote {results_path}" + (f" and {curve_path}" if runs else ""), file=sys.stderr)
    return 0


def _labelled(bench: results.BenchResults, label: str) -> results.BenchResults:
    if not label:
        return bench
    return dataclasses.replace(
        bench,
        runs=tuple(dataclasses.replace(r, label=label) for r in bench.runs),
        mt=tuple(dataclasses.replace(m, label=label) for m in bench.mt),
    )


def default_knobs() -> dict[str, float]:
    """``mode/policy`` → the first sweep value of that policy: the run a report headlines."""
    return {p.label: p.knob.sweep[0] for mode in MODES.values() for p in mode.policies}


def _relative_name(path: Path, beside: Path) -> str:
    try:
        return str(path.resolve().relative_to(beside.resolve().parent))
    except ValueError:
        return str(path.resolve())


def _counts(text: str, what: str) -> tuple[int, ...]:
    """`--clients` / `--streams`: a comma-separated list of positive numbers, at least one."""
    try:
        counts = tuple(_positive_int(item) for item in _items(text))
    except argparse.ArgumentTypeError as e:
        raise UsageError(f"argument --{what}: {e}; write e.g. --{what} 1,2,4") from None
    if not counts:
        raise UsageError(f"argument --{what}: give at least one number of {what}, e.g. --{what} 1,2,4")
    return counts


def cmd_load(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from streamst.benchmarks import load

    levels = _counts(args.clients, "clients")
    if not args.duration_s > 0:
        raise UsageError(f"argument --duration-s: {args.duration_s:g} is not positive; write e.g. --duration-s 60")
    pair = datasets.parse_pairs(f"{args.source}-{args.target}")[0]
    clips = load.load_clips(pair, args.data_dir)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    server = load.ServerSettings(args.model_concurrency, args.threads, args.max_backlog_ms, output / "server.log")
    plan = load.LoadPlan(pair, levels, args.duration_s, server, args.mode, args.url, args.token)

    def announce(n_clients: int) -> None:
        print(f"running {n_clients} client(s) for {args.duration_s:g} s ...", file=sys.stderr, flush=True)

    result = load.run_load(plan, clips, announce)
    text = load.format_report(plan, result)
    print(text, end="")
    (output / "load.txt").write_text(text, encoding="utf-8")
    load.save_json(result, output / "load.json")
    print(f"{PROG}: wrote {output / 'load.txt'}, {output / 'load.json'}", file=sys.stderr)
    return 0


def cmd_scaleout(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from streamst.benchmarks import load, scaleout
    from streamst.server import llama_server

    levels = _counts(args.clients, "clients")
    if not args.duration_s > 0:
        raise UsageError(f"argument --duration-s: {args.duration_s:g} is not positive; write e.g. --duration-s 60")
    llama_server.require_binary()
    pair = datasets.parse_pairs(f"{args.source}-{args.target}")[0]
    clips = load.load_clips(pair, args.data_dir)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    decoder = llama_server.LlamaServerOptions(n_threads=args.decoder_threads, n_slots=args.decoder_slots or max(levels))
    plan = scaleout.ScaleoutPlan(
        pair, levels, args.duration_s, output, args.mode, args.threads, decoder, not args.no_compare
    )

    def announce(setup: str, n_clients: int) -> None:
        print(f"{setup}: {n_clients} client(s) for {args.duration_s:g} s ...", file=sys.stderr, flush=True)

    results = scaleout.run_scaleout(plan, clips, announce)
    text = scaleout.format_report(plan, results)
    print(text, end="")
    (output / "scaleout.txt").write_text(text, encoding="utf-8")
    scaleout.save_json(results, output / "scaleout.json")
    print(f"{PROG}: wrote {output / 'scaleout.txt'}, {output / 'scaleout.json'}", file=sys.stderr)
    return 0


def cmd_profile(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from streamst.benchmarks import profile

    from streamst.engine import Engine

    levels = _counts(args.streams, "streams")
    pairs = datasets.parse_pairs(args.pair)
    if len(pairs) != 1:
        raise UsageError(f"argument --pair: give one pair, e.g. --pair en-zh, got {args.pair!r}")
    pair = pairs[0]
    spec = mode_spec(args.mode)
    policy = spec.policy(args.policy)
    knob = policy.knob.parse(policy.knob.default if args.knob is None else args.knob)
    run = RunSpec(args.mode, policy.name, knob, pair)
    clips = datasets.load_speech(datasets.FLEURS_MINI, [pair], root=args.data_dir)[pair.name]
    if len(clips) < max(levels):
        raise UsageError(f"{pair.name} has {len(clips)} FLEURS-mini clips; ask for at most that many streams")
    engine = Engine(_engine_config(args, LlamaOptions(n_streams=args.translator_slots)))
    engine.load()
    rounds = []
    for n in levels:
        print(f"profiling {n} stream(s) of {pair.name} ...", file=sys.stderr, flush=True)
        rounds.append(profile.profile_round(engine, run, clips[:n]))
    title = (f"{PROG} profile: {run.name}, {pair.name}, {args.threads} thread(s) per model call, "
             f"{args.translator_slots} translator slot(s)")  # fmt: skip
    print(profile.save(rounds, title, Path(args.output)), end="")
    return 0


def cmd_faults(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Exit 0 when every case that ran holds, 1 otherwise."""
    from streamst.benchmarks import faults, load

    cases = _fault_cases(args.cases, faults.CASES)
    client = _funasr_client(args.funasr_client, cases, explicit=args.cases is not None)
    clips = load.load_clips(datasets.parse_pairs(faults.PAIR)[0], args.data_dir)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)

    def announce(number: int) -> None:
        print(f"case {number}: {faults.TITLES[number]} ...", file=sys.stderr, flush=True)

    results = faults.run_faults(faults.FaultPlan(cases, tuple(clips), output, client), announce)
    _publish(faults.format_report(results), output / "faults.txt", output / "faults.json",
             lambda path: faults.save_json(results, path))  # fmt: skip
    return 0 if faults.all_hold(results) else 1


def _fault_cases(text: str | None, known: Sequence[int]) -> tuple[int, ...]:
    if text is None:
        return tuple(known)
    cases = []
    for item in _items(text):
        if not item.isdigit() or int(item) not in known:
            raise UsageError(f"argument --cases: {item!r} is not a case; choose from {', '.join(map(str, known))}")
        cases.append(int(item))
    if not cases:
        raise UsageError("argument --cases: give at least one case, e.g. --cases 1,4")
    return tuple(dict.fromkeys(cases))


def _funasr_client(path: str | None, cases: Sequence[int], explicit: bool) -> Path | None:
    """The FunASR client case 6 runs; without it case 6 is skipped, unless --cases asked for it."""
    hint = "FunASR's runtime/python/websocket/funasr_wss_client.py (git show HEAD:<that path> in a FunASR clone)"
    if path is None:
        if explicit and 6 in cases:
            raise UsageError(
                f"case 6 runs FunASR's own client: give {hint} with --funasr-client, or drop 6 from --cases"
            )
        return None
    if not Path(path).is_file():
        raise UsageError(f"argument --funasr-client: {path} is not a file; give {hint}")
    return Path(path)


def cmd_soak(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Exit 0 when every healthy client got every final, memory stayed flat and every bad input got its answer."""
    from streamst.benchmarks import load, soak

    if not args.duration_s > soak.RSS_BASELINE_S:
        raise UsageError(
            f"argument --duration-s: {args.duration_s:g} s leaves no memory sample after the first minute; "
            f"give more than {soak.RSS_BASELINE_S:g}, e.g. --duration-s 600"
        )
    pair = datasets.parse_pairs(f"{args.source}-{args.target}")[0]
    clips = load.load_clips(pair, args.data_dir)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    plan = soak.SoakPlan(pair, args.duration_s, args.clients, args.mode, output / "server.log")
    print(f"soaking: {args.clients} client(s) and an abusive one for {args.duration_s:g} s ...", file=sys.stderr)
    result = soak.run_soak(plan, clips)
    _publish(soak.format_report(plan, result), output / "soak.txt", output / "soak.json",
             lambda path: soak.save_json(result, path))  # fmt: skip
    return 0 if result.holds else 1


def _publish(text: str, text_path: Path, json_path: Path, save_json: Callable[[Path], None]) -> None:
    """Prints the report and writes it, and its JSON beside it."""
    print(text, end="")
    text_path.write_text(text, encoding="utf-8")
    save_json(json_path)
    print(f"{PROG}: wrote {text_path}, {json_path}", file=sys.stderr)


# ---------------------------------------------------------------------------------------
# Entry point


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        configure_logging(args.verbose)
        return int(args.func(args, argv) or 0)
    except StreamstError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
