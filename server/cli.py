"""`streamst-server`: live translated captions over WebSocket, with a browser page.

    streamst-server                        # http://127.0.0.1:8765/ ; FunASR clients on port 10095
    streamst-server --host 0.0.0.0         # prints the page's URL with a token generated at start
    streamst-server --host 0.0.0.0 --token s3cret --public-origin https://captions.example.org
    streamst-server --funasr-source zh --funasr-target en

SIGTERM (or Ctrl-C) stops it gracefully: open segments are finished and their finals sent."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

from streamst.cores import check_budget, default_concurrency
from streamst.engine import Engine, EngineConfig
from streamst.errors import StreamstError
from streamst.options import MODES
from streamst.presets import SERVER_QUALITY, add_translator_arguments, decoders, translator_server
from streamst.server.access import WILDCARD_HOSTS
from streamst.server.app import App
from streamst.server.config import DEFAULT_PORT, FUNASR_PORT, ServerConfig
from streamst.server.limits import Limits
from streamst.server.logs import JsonFormatter

log = logging.getLogger("streamst.server.cli")

TOKEN_ENV = "STREAMST_TOKEN"
ROUTE_PROBE = ("192.0.2.1", 9)  # TEST-NET-1: "connecting" a UDP socket there only picks the outgoing interface


def build_parser() -> argparse.ArgumentParser:
    defaults = Limits()
    parser = argparse.ArgumentParser(
        prog="streamst-server", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    net = parser.add_argument_group("listening")
    net.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 or :: for the network)")
    net.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="page, /v1/stream and /funasr (default %(default)s)"
    )
    net.add_argument(
        "--funasr-port", type=int, default=FUNASR_PORT, help="FunASR-compatible port (default %(default)s; 0 disables)"
    )
    net.add_argument("--certfile", help="TLS certificate (PEM) to serve https:// and wss://")
    net.add_argument("--keyfile", help="private key of --certfile")
    access = parser.add_argument_group("access")
    access.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"shared token clients must give (or ${TOKEN_ENV}); beyond loopback one is generated if none is given",
    )
    access.add_argument(
        "--no-token", action="store_true", help="beyond loopback, let anyone connect without a token (not generated)"
    )
    access.add_argument(
        "--public-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="where this server's page is opened besides localhost, such as https://captions.example.org (repeat)",
    )
    access.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="another site's page allowed to open WebSockets (repeat); without any, every page may on loopback, "
        "and only the server's own beyond it",
    )
    funasr = parser.add_argument_group("FunASR clients")
    funasr.add_argument(
        "--funasr-source", default="zh", help="spoken language when the client names none (%(default)s)"
    )
    funasr.add_argument(
        "--funasr-target", default="en", help="caption language when the client names none (%(default)s)"
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-sessions", type=int, default=defaults.max_sessions, help="sessions at once (%(default)s)"
    )
    limits.add_argument("--max-frame-bytes", type=int, default=defaults.max_frame_bytes, help="largest audio frame")
    limits.add_argument("--max-session-s", type=float, default=defaults.max_session_s, help="audio per session, s")
    limits.add_argument(
        "--idle-timeout-s", type=float, default=defaults.idle_timeout_s, help="idle time that ends a session"
    )
    limits.add_argument(
        "--max-backlog-ms", type=int, default=defaults.max_backlog_ms, help="lag that ends a live stream (ms)"
    )
    limits.add_argument(
        "--max-offline-backlog-ms",
        type=int,
        default=defaults.max_offline_backlog_ms,
        help="how far FunASR offline uploads may run ahead (ms)",
    )
    limits.add_argument(
        "--finish-timeout-s",
        type=float,
        default=defaults.finish_timeout_s,
        help="time to finish a stream's open segments, plus 4 s per second of audio still waiting",
    )
    limits.add_argument(
        "--model-concurrency", type=int, default=None,
        help=f"model calls at once (default {defaults.model_concurrency}, or {default_concurrency(remote_translator=True)} "
        "with --translator-url; with --threads, at most the cores)",
    )
    rooms = parser.add_argument_group("rooms (one speaker, many listeners)")
    rooms.add_argument("--max-rooms", type=int, default=defaults.max_rooms, help="rooms at once (%(default)s)")
    rooms.add_argument(
        "--max-listeners-per-room", type=int, default=defaults.max_listeners_per_room,
        help="listeners of one room (%(default)s)",
    )  # fmt: skip
    rooms.add_argument(
        "--max-languages-per-room", type=int, default=defaults.max_languages_per_room,
        help="caption languages of one room, each one translation stream (%(default)s)",
    )  # fmt: skip
    rooms.add_argument(
        "--room-history-s", type=float, default=defaults.room_history_s,
        help="recent speech whose captions a late joiner gets first (%(default)g s)",
    )  # fmt: skip
    engine = parser.add_argument_group("engine")
    engine.add_argument("--mode", choices=MODES, default=ServerConfig().default_mode, help="default mode (%(default)s)")
    engine.add_argument("--threads", type=int, default=EngineConfig().n_threads,
                        help="threads per model call (%(default)s: half the cores)")  # fmt: skip
    engine.add_argument("--lazy", action="store_true", help="load the models with the first session, not at startup")
    add_translator_arguments(engine, SERVER_QUALITY)
    logs = parser.add_argument_group("logging")
    logs.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    logs.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    return parser


def configure_logging(verbosity: int, as_json: bool) -> None:
    level = logging.INFO if verbosity == 0 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("websockets").setLevel(logging.WARNING if verbosity < 2 else logging.DEBUG)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    limits = Limits(
        max_sessions=args.max_sessions,
        max_frame_bytes=args.max_frame_bytes,
        max_session_s=args.max_session_s,
        idle_timeout_s=args.idle_timeout_s,
        max_backlog_ms=args.max_backlog_ms,
        max_offline_backlog_ms=args.max_offline_backlog_ms,
        model_concurrency=args.model_concurrency or default_concurrency(
            args.threads, remote_translator=bool(args.translator_url)
        ),
        finish_timeout_s=args.finish_timeout_s,
        max_rooms=args.max_rooms,
        max_listeners_per_room=args.max_listeners_per_room,
        max_languages_per_room=args.max_languages_per_room,
        room_history_s=args.room_history_s,
    )
    return ServerConfig(
        host=args.host,
        port=args.port,
        funasr_port=args.funasr_port or None,
        limits=limits,
        token=args.token,
        no_token=args.no_token,
        allowed_origins=tuple(args.allow_origin),
        public_origins=tuple(args.public_origin),
        funasr_source=args.funasr_source,
        funasr_target=args.funasr_target,
        default_mode=args.mode,
        preload=not args.lazy,
        certfile=args.certfile,
        keyfile=args.keyfile,
    )


async def serve(app: App) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    generates_token = app.config.generates_token
    await app.start()
    if generates_token:
        announce_token(app)
    await stop.wait()
    log.info("signal received")
    await app.shutdown()


def announce_token(app: App) -> None:
    """Prints the generated token once, with the page's address that carries it (never logged)."""
    print(
        "streamst-server: clients must give this token (--token sets your own, --no-token serves without one):\n"
        f"  page: {page_url(app)}\n"
        f"  other clients: ?token={app.config.token} or 'Authorization: Bearer {app.config.token}'",
        file=sys.stderr,
        flush=True,
    )


def page_url(app: App) -> str:
    """The page's address with the token: on the first public origin, else on the host it listens
    on (for every interface, this machine's address on its default route, an origin it takes as own)."""
    config = app.config
    if config.public_origins:
        base = config.public_origins[0].rstrip("/")
    else:
        host = _network_address() if config.host.strip() in WILDCARD_HOSTS else config.host
        host = f"[{host}]" if ":" in host else host
        base = f"{'https' if config.certfile else 'http'}://{host}:{app.ports[0]}"
    return f"{base}/?token={config.token}"


def _network_address() -> str:
    """This machine's IPv4 address on its default route (no packet is sent), else its name."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(ROUTE_PROBE)
        return probe.getsockname()[0]
    return socket.gethostname()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, args.log_json)
    try:
        config = config_from_args(args)
        server = translator_server(args)
        check_budget(args.threads, config.limits.model_concurrency, remote_translator=server is not None)
        chosen = decoders(args.translator, args.quality, SERVER_QUALITY)
        engine_config = EngineConfig(
            n_threads=args.threads, translator_model=chosen.steps, finals_model=chosen.finals, translator_server=server
        )
        asyncio.run(serve(App(Engine(engine_config), config)))
    except StreamstError as e:
        print(f"streamst-server: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(
            f"streamst-server: error: {e}; is another server on that port? choose another with --port", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
