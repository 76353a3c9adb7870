"""`streamst-mic`: live translated captions of your microphone in the terminal.

    streamst-mic --list-devices
    streamst-mic --source en --target zh                       # default microphone, local server
    streamst-mic --source de --target en --device "USB" --save talk.srt
    streamst-mic --source en --target de --file talk.wav       # a file, played at real-time pace
    streamst-mic --server wss://captions.example.org --token "$STREAMST_TOKEN" --source en --target ja
    streamst-mic --source en --target de --room                # speak into a new room: prints its link
    streamst-mic --listen "http://HOST:8765/room/ID?key=KEY" --target fr   # follow a room, no microphone

Ctrl-C stops: the audio so far is sent, the last captions arrive, and the program exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
from collections.abc import Callable
from typing import NoReturn

from streamst import wire
from streamst.client import devices
from streamst.client.app import Client, ClientOptions
from streamst.client.capture import FileSource, MicrophoneSource, Source
from streamst.client.connection import DEFAULT_SERVER, ConnectionOptions, stream_url
from streamst.client.display import PROGRAM, Display, DisplayLogHandler, PlainDisplay, Snapshot, TtyDisplay
from streamst.client.errors import ClientError
from streamst.client.listen import RoomListener, captions_url
from streamst.client.save import CaptionWriter, open_writer
from streamst.errors import StreamstError

log = logging.getLogger("streamst.client.mic")

TOKEN_ENV = "STREAMST_TOKEN"
MODES = ("direct", "cascade")
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one line on stderr (exit status 2), like every other error of the client."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    defaults = ClientOptions(ConnectionOptions(url=stream_url(DEFAULT_SERVER), start=wire.Start("en", "zh")))
    parser = _Parser(prog=PROGRAM, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    speech = parser.add_argument_group("languages and translation")
    speech.add_argument("--source", "-s", help="spoken language: en, zh, de, German, … (required)")
    speech.add_argument("--target", "-t", help="caption language (required)")
    speech.add_argument("--mode", choices=MODES, help="direct (commits while you speak) or cascade (default: the server's)")
    speech.add_argument("--policy", help="direct mode's policy: wait-k, la or confidence")
    speech.add_argument("--knob", type=float, help="the policy's latency knob (k, n or tau)")
    speech.add_argument("--step-ms", type=int, help="new audio (ms) that triggers the next step")
    room = parser.add_argument_group("rooms (one speaker, listeners in their own languages)")
    room.add_argument(
        "--room",
        nargs="?",
        const=wire.NEW_ROOM,
        metavar="ID",
        help="speak into a room: a new one (its link is printed), or the room ID made by POST /v1/rooms",
    )
    room.add_argument("--room-key", help="the speak key of the room --room ID names")
    room.add_argument(
        "--listen", metavar="ROOM", help="follow a room instead of speaking: its link, or its id with --key"
    )
    room.add_argument("--key", help="the room's read key, when --listen gives an id rather than the link")
    audio = parser.add_argument_group("audio")
    audio.add_argument("--device", "-d", help="input device: its index or (part of) its name; default: the system's")
    audio.add_argument("--list-devices", action="store_true", help="list input devices and exit")
    audio.add_argument("--file", "-f", metavar="AUDIO", help="stream this file at real-time pace instead of a mic")
    server = parser.add_argument_group("server")
    server.add_argument(
        "--server", default=DEFAULT_SERVER, help="host:port or ws:// / wss:// URL (default %(default)s)"
    )
    server.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=f"the server's token (or ${TOKEN_ENV})")
    server.add_argument("--cafile", help="a certificate to trust for wss:// (a self-signed server's)")
    server.add_argument(
        "--max-buffer-s",
        type=float,
        default=defaults.max_buffer_ms / 1000,
        help="audio kept while disconnected (default %(default)g s)",
    )
    server.add_argument(
        "--max-reconnect-s",
        type=float,
        default=defaults.connection.max_reconnect_s,
        help="give up after this long without the server (default %(default)g s)",
    )
    server.add_argument(
        "--stop-timeout-s",
        type=float,
        default=defaults.stop_timeout_s,
        help="wait this long for the last captions after Ctrl-C (default %(default)g s)",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--save",
        action="append",
        default=[],
        metavar="PATH",
        help="write finished captions to PATH (.srt, .vtt or .jsonl) as they arrive; repeatable",
    )
    output.add_argument("--show-source", action="store_true", help="show the transcript beside the translation")
    output.add_argument("--plain", action="store_true", help="plain lines even on a terminal")
    output.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    return parser


def options_from_args(args: argparse.Namespace) -> ClientOptions:
    if not args.source or not args.target:
        raise ClientError("give the spoken and the caption language, e.g. --source en --target zh")
    if args.device is not None and args.file is not None:
        raise ClientError("give --device or --file, not both")
    if args.room_key is not None and args.room in (None, wire.NEW_ROOM):
        raise ClientError("--room-key goes with --room ID (the room made by POST /v1/rooms)")
    start = wire.Start(
        source=args.source,
        target=args.target,
        mode=args.mode,
        policy=args.policy,
        knob=args.knob,
        step_ms=args.step_ms,
        room=args.room,
        room_key=args.room_key,
    )
    connection = ConnectionOptions(
        url=stream_url(args.server),
        start=start,
        token=args.token or None,
        cafile=args.cafile,
        max_reconnect_s=args.max_reconnect_s,
    )
    return ClientOptions(
        connection=connection,
        max_buffer_ms=round(args.max_buffer_s * 1000),
        stop_timeout_s=args.stop_timeout_s,
    )


def make_source(args: argparse.Namespace) -> Source:
    if args.file is not None:
        return FileSource(args.file)
    return MicrophoneSource(devices.resolve_device(args.device, devices.list_input_devices()))


def make_display(args: argparse.Namespace, snapshot: Callable[[], Snapshot]) -> Display:
    """The terminal display, or plain lines when stdout is not a terminal (or --plain)."""
    if sys.stdout.isatty() and not args.plain and os.environ.get("TERM") != "dumb":
        return TtyDisplay(sys.stdout, snapshot, args.show_source, columns=lambda: shutil.get_terminal_size().columns)
    return PlainDisplay(sys.stdout, sys.stderr, snapshot, args.show_source)


def configure_logging(verbosity: int, display: Display | None) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler: logging.Handler
    if isinstance(display, TtyDisplay):
        handler = DisplayLogHandler(display, level)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROGRAM}: %(levelname)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("websockets").setLevel(logging.WARNING if verbosity < 2 else logging.DEBUG)


def list_devices() -> int:
    found = devices.list_input_devices()
    if not found:
        print("no input devices found (* marks the default)", file=sys.stderr)
        return EXIT_BAD_INPUT
    for device in found:
        print(devices.describe(device))
    return 0


def listen(args: argparse.Namespace, writers: list[CaptionWriter]) -> int:
    """--listen: shows (and saves) a room's captions in --target until the room ends."""
    if not args.target:
        raise ClientError("give the language to read the room in, e.g. --listen LINK --target fr")
    if args.room is not None or args.device is not None or args.file is not None:
        raise ClientError("--listen follows a room without audio: leave out --room, --device and --file")
    url = captions_url(args.listen, args.server, args.target, args.key)
    writers += [open_writer(path, "", args.target) for path in args.save]
    listener = RoomListener(url, writers, args.cafile, args.max_reconnect_s)
    display = make_display(args, listener.snapshot)
    configure_logging(args.verbose, display)
    summary = ""
    try:
        code = asyncio.run(listener.run(display))
        summary = f"the room ended · {listener.n_finals} caption{'s' if listener.n_finals != 1 else ''}"
        return code
    finally:
        display.close(summary)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    writers: list[CaptionWriter] = []
    try:
        if args.list_devices:
            configure_logging(args.verbose, None)
            return list_devices()
        if args.listen is not None:
            return listen(args, writers)
        options = options_from_args(args)
        source = make_source(args)
        writers = [open_writer(path, args.source, args.target) for path in args.save]
        client = Client(options, source, writers)
        display = make_display(args, client.snapshot)
        configure_logging(args.verbose, display)
        return asyncio.run(client.run(display))
    except StreamstError as e:
        print(f"{PROGRAM}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{PROGRAM}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    finally:
        for writer in writers:
            writer.close()


if __name__ == "__main__":
    sys.exit(main())
