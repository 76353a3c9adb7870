"""`streamst-mic` and rooms: `--room` speaks a file into a new room and prints its link; `--listen LINK
--target es` follows that room, shows and saves its captions and exits when the room ends; a bad
room gets a clear error. The server runs in a thread of this process on the scripted models
(tests/scripted.py); the clients are the real command, as subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from scripted import ScriptedEngine, audio_for, spoken

from streamst import wire
from streamst.audio import write_wav
from streamst.client.errors import ClientError
from streamst.client.listen import captions_url, viewer_link
from streamst.server.app import App
from streamst.server.config import ServerConfig
from streamst.types import SAMPLE_RATE_HZ

TALK = spoken("Good morning everyone. Today we talk about the weather. Tomorrow it will rain.", start_ms=300)
TALK_MS = TALK[-1].end_ms + 1_500
RUN_TIMEOUT_S = 120
EXPECTED = ["GOOD MORNING EVERYONE.", "TODAY WE TALK ABOUT THE WEATHER.", "TOMORROW IT WILL RAIN."]


def test_captions_url_from_a_link_or_an_id():
    link = "http://example.org:8765/room/abc123?key=READ"
    assert captions_url(link, "ignored:1", "fr") == "ws://example.org:8765/v1/rooms/abc123/captions?target=fr&key=READ"
    assert captions_url("https://example.org/room/abc123/?key=K", "", "de").startswith("wss://example.org/v1/rooms/")
    by_id = captions_url("abc123", "127.0.0.1:9000", "zh", "K")
    assert by_id == "ws://127.0.0.1:9000/v1/rooms/abc123/captions?target=zh&key=K"
    assert viewer_link("wss://example.org/v1/stream", "abc123", "K+/") == "https://example.org/room/abc123?key=K%2B%2F"
    for room, key, says in [
        ("abc123", None, "read key"),
        ("http://example.org/room/abc123", None, "read key"),
        ("http://example.org/stream", "K", "not a room's link"),
    ]:
        with pytest.raises(ClientError, match=says):
            captions_url(room, "127.0.0.1:9000", "fr", key)


@contextlib.contextmanager
def serving() -> Iterator[App]:
    """The app on its own event loop in a thread, so that subprocesses can talk to it."""
    loop = asyncio.new_event_loop()
    app = App(ScriptedEngine(TALK), ServerConfig(host="127.0.0.1", port=0, funasr_port=None))
    thread = threading.Thread(target=loop.run_forever, name="server-loop", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(app.start(), loop).result(RUN_TIMEOUT_S)
    try:
        yield app
    finally:
        asyncio.run_coroutine_threadsafe(app.shutdown(), loop).result(RUN_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(RUN_TIMEOUT_S)
        loop.close()


def _mic(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "streamst.client.mic", "--plain", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _room_link(speaker: subprocess.Popen) -> tuple[str, list[str]]:
    """Reads the speaker's stderr until it prints the room's link."""
    lines = []
    for line in speaker.stderr:
        lines.append(line)
        match = re.search(r"listeners open (\S+)", line)
        if match:
            return match.group(1), lines
    pytest.fail(f"the speaker printed no room link: {''.join(lines)}")


def test_speak_into_a_new_room_and_follow_it_as_a_listener(tmp_path: Path):
    wav = tmp_path / "talk.wav"
    write_wav(wav, audio_for(TALK, TALK_MS), SAMPLE_RATE_HZ)
    saved = tmp_path / "room.vtt"
    with serving() as app:
        server = f"127.0.0.1:{app.ports[0]}"
        speaker = _mic("--server", server, "--source", "en", "--target", "de", "--room", "--file", str(wav))
        try:
            link, _ = _room_link(speaker)
            listener = _mic("--listen", link, "--target", "es", "--save", str(saved))
            listener_out, listener_err = listener.communicate(timeout=RUN_TIMEOUT_S)
            speaker_out, speaker_err = speaker.communicate(timeout=RUN_TIMEOUT_S)
        finally:
            for process in (speaker, locals().get("listener")):
                if process is not None and process.poll() is None:
                    process.kill()
        bad = _mic("--listen", f"http://{server}/room/nosuchroom?key=x", "--target", "es")
        _, bad_err = bad.communicate(timeout=RUN_TIMEOUT_S)
    assert speaker.returncode == 0, speaker_err
    assert speaker_out.splitlines() == EXPECTED
    assert link.startswith(f"http://{server}{wire.viewer_path('')}") and "?key=" in link
    assert listener.returncode == 0, listener_err
    assert listener_out.splitlines() == EXPECTED, (listener_out, listener_err)
    assert "the room ended · 3 captions" in listener_err
    vtt = saved.read_text(encoding="utf-8")
    assert vtt.startswith("WEBVTT") and vtt.count(" --> ") == 3 and "TOMORROW IT WILL RAIN." in vtt
    assert bad.returncode == 2 and "unknown_room" in bad_err and "nosuchroom" in bad_err, bad_err
