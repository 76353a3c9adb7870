"""Which decoder translates: a quality preset (`--quality fast|best`) or a registry name
(`--translator NAME`), shared by the command-line tools.

`fast` is the 0.5B decoder, `best` the 1.5B one; the default setup pulls both. best has 1.4 to 2.7
times fast's BLEU on FLORES at about 1.6 times the time per sentence (`benchmarks/QUALITY.md` has
both measured). Where `--quality` is not given, `streamst translate` (one stream) lets the mode
choose (`DEFAULT_QUALITY_BY_MODE`): the direct mode translates at every step and on 2 cores keeps
up only with fast; the cascade translates each sentence once and keeps up with best (RTF 0.56-0.76
on 2 cores, one of them busy). The server and the benchmarks use fast (`DEFAULT_QUALITY`)."""

from __future__ import annotations

import argparse
import os

from streamst.errors import OptionsError
from streamst.registry.catalog import catalog
from streamst.translators.openai_server import ServerOptions

API_KEY_ENV = "STREAMST_TRANSLATOR_API_KEY"

QUALITY_PRESETS = {
    "fast": "qwen2.5-coder-0.5b-instruct-q4km",
    "best": "qwen2.5-coder-1.5b-instruct-q4km",
}
DEFAULT_QUALITY = "fast"  # the direct mode's, the server's (many streams share its cores) and the benchmarks'
# `streamst translate` (one stream): the decoder each mode keeps within real time on 2 cores.
DEFAULT_QUALITY_BY_MODE = {"direct": "fast", "cascade": "best"}


def add_translator_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, by_mode: bool = False
) -> None:
    """The decoder options; `by_mode`: without --quality the mode chooses (`translator_model`)."""
    default = (
        ", ".join(f"{q} for the {m} mode" for m, q in DEFAULT_QUALITY_BY_MODE.items()) if by_mode else DEFAULT_QUALITY
    )
    parser.add_argument(
        "--quality", choices=sorted(QUALITY_PRESETS), default=None,
        help=f"translation quality preset: fast ({QUALITY_PRESETS['fast']}) or best ({QUALITY_PRESETS['best']}, "
        f"slower); default: {default}",
    )
    parser.add_argument(
        "--translator", metavar="MODEL", default=None,
        help="registry name of the decoder (see `streamst models list`); overrides --quality",
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


def translator_model(translator: str | None, quality: str | None, mode: str | None = None) -> str:
    """The registry name of the decoder chosen by `--translator` (a translator model), else
    `--quality`, else the default of `mode` (`DEFAULT_QUALITY_BY_MODE`; `DEFAULT_QUALITY` without
    one); a clear OptionsError for anything else."""
    if translator:
        translators = sorted(name for name, m in catalog().manifests.items() if m.role == "translator")
        if translator not in translators:
            raise OptionsError(f"--translator {translator!r} is not a translator model; choose one of: {', '.join(translators)}")
        return translator
    quality = quality or DEFAULT_QUALITY_BY_MODE.get(mode or "", DEFAULT_QUALITY)
    if quality not in QUALITY_PRESETS:
        raise OptionsError(f"unknown quality preset {quality!r}; choose one of: {', '.join(sorted(QUALITY_PRESETS))}")
    return QUALITY_PRESETS[quality]


def translator_server(args: argparse.Namespace) -> ServerOptions | None:
    """The completion server `--translator-url` names (with its model and key), or None: in-process."""
    url = getattr(args, "translator_url", None)
    if not url:
        return None
    return ServerOptions(url=url, model=args.translator_api_model, api_key=args.translator_api_key)
