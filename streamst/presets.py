"""Which decoders translate: a quality preset (`--quality fast|balanced|best`) or a registry name
(`--translator NAME`), shared by the command-line tools.

A preset names two decoders (`Decoders`): one for the steps, which propose a continuation every
500 ms while a sentence is spoken (the direct mode only), and one for the finals, which finish
each sentence once it is heard whole (the direct mode's last words; every sentence of the cascade
and of rooms). `fast` is the 0.5B decoder for both, `best` the 1.5B one for both, and `balanced`
steps with the 0.5B and finishes with the 1.5B: a final runs once a sentence, so the larger decoder
costs 1-1.8 s a sentence (2 threads) rather than that at every step. best has 1.4 to 2.7 times
fast's BLEU on FLORES at about 1.6 times the time per sentence (`benchmarks/QUALITY.md`); the
direct mode with best does not keep up on 2 cores. `benchmarks/QUALITY-FULL.md` compares the three
end to end. `streamst translate`, the benchmarks and the Python `Engine` use `balanced`
(`DEFAULT_QUALITY`); the server, whose cores many streams share, uses `fast` (`SERVER_QUALITY`).
The default setup pulls both decoders."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from streamst.errors import OptionsError
from streamst.registry.catalog import catalog
from streamst.translators.openai_server import ServerOptions

API_KEY_ENV = "STREAMST_TRANSLATOR_API_KEY"

SMALL_DECODER = "qwen2.5-coder-0.5b-instruct-q4km"
LARGE_DECODER = "qwen2.5-coder-1.5b-instruct-q4km"


@dataclass(frozen=True)
class Decoders:
    """Registry names of the decoder that steps (proposes while a sentence is spoken) and of the
    one that writes finals (finishes a sentence heard whole); the same name: one decoder loaded."""

    steps: str
    finals: str


QUALITY_PRESETS = {
    "fast": Decoders(steps=SMALL_DECODER, finals=SMALL_DECODER),
    "balanced": Decoders(steps=SMALL_DECODER, finals=LARGE_DECODER),
    "best": Decoders(steps=LARGE_DECODER, finals=LARGE_DECODER),
}
DEFAULT_QUALITY = "balanced"  # `streamst translate` (one stream), the benchmarks and the Python Engine
SERVER_QUALITY = "fast"  # the server: many streams share its cores


def add_translator_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, default_quality: str = DEFAULT_QUALITY
) -> None:
    """The decoder options; without --quality or --translator, `default_quality` applies."""
    described = "; ".join(f"{name}: {_describe(preset)}" for name, preset in sorted(QUALITY_PRESETS.items()))
    parser.add_argument(
        "--quality", choices=sorted(QUALITY_PRESETS), default=None,
        help=f"translation quality preset ({described}); default: {default_quality}",
    )
    parser.add_argument(
        "--translator", metavar="MODEL", default=None,
        help="registry name of one decoder for steps and finals (see `streamst models list`); overrides --quality",
    )
    parser.add_argument(
        "--translator-url", metavar="URL", default=None,
        help="translate on an OpenAI-compatible completion server instead of in-process: its API base, "
        "such as http://127.0.0.1:8080/v1 (llama-server, vLLM, SGLang); --quality/--translator are then unused",
    )
    parser.add_argument(
        "--translator-api-model", metavar="NAME", default="",
        help="the model name that server serves (default: the first it lists at /models)",
    )
    parser.add_argument(
        "--translator-api-key", metavar="KEY", default=os.environ.get(API_KEY_ENV, ""),
        help=f"that server's API key (or ${API_KEY_ENV})",
    )


def _describe(preset: Decoders) -> str:
    if preset.steps == preset.finals:
        return preset.steps
    return f"{preset.steps} steps, {preset.finals} finals"


def decoders(translator: str | None, quality: str | None, default_quality: str = DEFAULT_QUALITY) -> Decoders:
    """The decoders chosen by `--translator` (one translator model for both), else `--quality`,
    else `default_quality`; a clear OptionsError for anything else."""
    if translator:
        translators = sorted(name for name, m in catalog().manifests.items() if m.role == "translator")
        if translator not in translators:
            raise OptionsError(f"--translator {translator!r} is not a translator model; choose one of: {', '.join(translators)}")
        return Decoders(steps=translator, finals=translator)
    quality = quality or default_quality
    if quality not in QUALITY_PRESETS:
        raise OptionsError(f"unknown quality preset {quality!r}; choose one of: {', '.join(sorted(QUALITY_PRESETS))}")
    return QUALITY_PRESETS[quality]


def translator_server(args: argparse.Namespace) -> ServerOptions | None:
    """The completion server `--translator-url` names (with its model and key), or None: in-process."""
    url = getattr(args, "translator_url", None)
    if not url:
        return None
    return ServerOptions(url=url, model=args.translator_api_model, api_key=args.translator_api_key)
