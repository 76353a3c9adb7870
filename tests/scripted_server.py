"""`streamst-server` over the scripted models (tests/scripted.py), as a process of its own: a replica
for the balancer tests, which start, drain and stop several at once without loading real models.

    python tests/scripted_server.py --port 18001 --max-sessions 4 [--translate-s 0.2]

It speaks exactly as `streamst-server` does (same App, same SIGTERM draining); its engine hears the
scripted talk `TALK` (tones under each word, `scripted.audio_for`) and upper-cases it as the
"translation"."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from scripted import ScriptedEngine, ScriptedTranslator, spoken  # noqa: E402

from streamst.server.app import App  # noqa: E402
from streamst.server.cli import serve  # noqa: E402
from streamst.server.config import ServerConfig  # noqa: E402
from streamst.server.limits import Limits  # noqa: E402

TALK = spoken(" ".join(["Good morning everyone, today we talk about the weather."] * 3), start_ms=300)
TALK_MS = TALK[-1].end_ms + 1_500


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-sessions", type=int, default=4)
    parser.add_argument("--translate-s", type=float, default=0.1, help="real time each translation takes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = ScriptedEngine(TALK, ScriptedTranslator(sleep_s=args.translate_s))
    limits = Limits(max_sessions=args.max_sessions, finish_timeout_s=30)
    config = ServerConfig(host="127.0.0.1", port=args.port, funasr_port=None, limits=limits, shutdown_grace_s=60)
    asyncio.run(serve(App(engine, config)))


if __name__ == "__main__":
    main()
