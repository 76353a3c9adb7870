"""A room's caption viewer in headless Chromium: the page of a live room shows the captions, switches
language (the new language's history, then live captions), survives a phone viewport, follows the
room's end, and downloads everything so far as WebVTT.

The server runs in this process on the scripted models (tests/scripted.py) with a translator that
marks each caption with its language, so what is tested is the page, not the models. Chromium is
driven as tests/test_server_browser.py drives it; the screenshots are saved as test artefacts
($STREAMST_ARTEFACTS or the pytest tmp dir) and their paths printed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from scripted import ScriptedEngine, ScriptedTranslator, audio_for, spoken
from test_server_browser import DESKTOP, PHONE, DevTools, _artefact_dir, _browser, _choose, _silent_wav, _wait_for
from websockets.asyncio.client import connect

from streamst import wire
from streamst.audio import float32_to_pcm16
from streamst.languages import Language
from streamst.server.app import App
from streamst.server.config import ServerConfig
from streamst.types import SAMPLES_PER_MS, Translation

pytestmark = pytest.mark.slow

TALK = spoken(
    "Good morning everyone. Welcome to the lecture. Today we talk about rivers and the sea. "
    "The Danube flows through ten countries. It ends in the Black Sea.",
    start_ms=300,
)
TALK_MS = TALK[-1].end_ms + 1_500
FRAME_MS = 100
SPEED = 3  # the talk is sent three times faster than real time
PAGE_TIMEOUT_S = 60.0


class MarkingTranslator(ScriptedTranslator):
    """The scripted translation, marked with its target language: "[es] GOOD MORNING EVERYONE."."""

    def translate(self, source_text: str, source: Language, target: Language, *args, **kwargs) -> Translation:
        translation = super().translate(source_text, source, target, *args, **kwargs)
        return Translation(f"[{target.code}] {translation.text}", translation.tokens, translation.n_prompt_tokens,
                           translation.n_prefill_tokens, translation.finished)  # fmt: skip


def _frames(audio: np.ndarray) -> list[bytes]:
    step = FRAME_MS * SAMPLES_PER_MS
    return [float32_to_pcm16(audio[i : i + step]) for i in range(0, len(audio), step)]


async def _speak(ws, frames: Sequence[bytes]) -> None:
    for frame in frames:
        await ws.send(frame)
        await asyncio.sleep(FRAME_MS / 1000 / SPEED)


CAPTIONS = "(document.getElementById('captions')?.innerText || '')"
STATUS_CLASS = "(document.getElementById('status')?.className || '')"
FINALS = "document.querySelectorAll('#captions .segment.final').length"


async def _view(page_ws_url: str, speaker, frames: list[bytes], downloads: Path, shots: Path) -> dict:
    async with connect(page_ws_url, max_size=2**26) as ws:
        devtools = DevTools(ws)
        await devtools.call("Page.enable")
        await devtools.call("Page.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
        page: dict = {}
        page["live"] = await _wait_for(devtools, f"{STATUS_CLASS}.includes('live')", 30)
        page["status_live"] = await devtools.evaluate("document.getElementById('status').textContent")
        half = len(frames) // 2
        await _speak(speaker, frames[:half])
        page["german"] = await _wait_for(devtools, f"{FINALS} >= 2 && {CAPTIONS}", PAGE_TIMEOUT_S, poll_s=0.2)
        page["language"] = await devtools.evaluate(_choose("target", "es"))
        page["spanish_history"] = await _wait_for(
            devtools, f"{FINALS} >= 2 && !{CAPTIONS}.includes('[de]') && {CAPTIONS}", PAGE_TIMEOUT_S, poll_s=0.2
        )
        await devtools.evaluate("document.getElementById('show-source').click(); true")
        await _speak(speaker, frames[half:])
        await speaker.send(wire.encode(wire.Stop()))
        page["ended"] = await _wait_for(
            devtools, f"{STATUS_CLASS}.includes('ended')", PAGE_TIMEOUT_S
        )
        page["status_ended"] = await devtools.evaluate("document.getElementById('status').textContent")
        page["spanish"] = await devtools.evaluate(CAPTIONS)
        page["targets"] = await devtools.evaluate(
            "[...document.querySelectorAll('#captions .target')].map(e => e.innerText)"
        )
        await devtools.screenshot(shots / "room-viewer.png")
        await devtools.evaluate("document.getElementById('theme').click(); true")
        page["theme"] = await devtools.evaluate("document.documentElement.className")
        await devtools.screenshot(shots / "room-viewer-light.png")
        await devtools.evaluate("document.getElementById('theme').click(); true")
        await devtools.call(
            "Emulation.setDeviceMetricsOverride", width=PHONE[0], height=PHONE[1], deviceScaleFactor=2, mobile=True
        )
        await asyncio.sleep(0.5)
        await devtools.screenshot(shots / "room-viewer-phone.png")
        page["overflow_on_phone"] = await devtools.evaluate("document.documentElement.scrollWidth > window.innerWidth")
        await devtools.evaluate("document.querySelector('details.options').open = true; true")
        await devtools.evaluate("document.getElementById('download-vtt').click(); true", user_gesture=True)
        deadline = time.monotonic() + 30
        while not list(downloads.glob("*.vtt")) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return page


def test_room_viewer_follows_a_live_room_switches_language_and_downloads_vtt(tmp_path):
    shots = _artefact_dir(tmp_path)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    wav = tmp_path / "silence.wav"
    _silent_wav(wav)
    frames = _frames(audio_for(TALK, TALK_MS))

    async def main():
        config = ServerConfig(host="127.0.0.1", port=0, funasr_port=None)
        app = App(ScriptedEngine(TALK, MarkingTranslator()), config)
        await app.start()
        try:
            base = f"127.0.0.1:{app.ports[0]}"
            async with connect(f"ws://{base}{wire.STREAM_PATH}") as speaker:
                await speaker.send(wire.encode(wire.Start("en", "de", room=wire.NEW_ROOM)))
                ready = json.loads(await speaker.recv())
                url = f"http://{base}{wire.viewer_path(ready['room_id'])}?key={ready['read_key']}&target=de"
                async with contextlib.AsyncExitStack() as stack:
                    browser = _browser(url, wav, tmp_path / "profile", DESKTOP)
                    page_ws_url = await asyncio.to_thread(stack.enter_context, browser)
                    return await _view(page_ws_url, speaker, frames, downloads, shots)
        finally:
            await app.shutdown()

    page = asyncio.run(asyncio.wait_for(main(), 4 * PAGE_TIMEOUT_S))
    names = ("room-viewer.png", "room-viewer-light.png", "room-viewer-phone.png")
    print("screenshots:", *(shots / name for name in names))
    assert page["live"], f"the viewer did not join the room: {page}"
    assert "[de] GOOD MORNING EVERYONE." in page["german"], page
    assert page["language"] == "es"
    assert "[es] GOOD MORNING EVERYONE." in page["spanish_history"], "the new language's history is missing"
    assert page["ended"] and "ended" in page["status_ended"], page
    assert page["targets"] == [f"[es] {s}" for s in (
        "GOOD MORNING EVERYONE.", "WELCOME TO THE LECTURE.", "TODAY WE TALK ABOUT RIVERS AND THE SEA.",
        "THE DANUBE FLOWS THROUGH TEN COUNTRIES.", "IT ENDS IN THE BLACK SEA.")], page["targets"]  # fmt: skip
    assert "Good morning everyone." in page["spanish"], "the source transcript is not shown"
    assert "theme-" in page["theme"]
    assert not page["overflow_on_phone"], "the viewer scrolls sideways on a phone-sized viewport"
    (vtt,) = downloads.glob("*.vtt")
    text = vtt.read_text(encoding="utf-8")
    assert text.startswith("WEBVTT") and text.count(" --> ") == 5 and "[es] IT ENDS IN THE BLACK SEA." in text
    for name in ("room-viewer.png", "room-viewer-light.png", "room-viewer-phone.png"):
        assert (shots / name).stat().st_size > 10_000


async def _share(page_ws_url: str, app: App, shots: Path) -> dict:
    async with connect(page_ws_url, max_size=2**26) as ws:
        devtools = DevTools(ws)
        await devtools.call("Page.enable")
        loaded = await _wait_for(devtools, "document.querySelectorAll('#target option').length > 0", 30)
        assert loaded, "the page did not load its language list"
        await devtools.evaluate(
            "document.getElementById('source').value = 'en';"
            "document.getElementById('target').value = 'de';"
            "document.querySelector('details.options').open = true;"
            "document.getElementById('room-share').click(); true"
        )
        await devtools.evaluate("document.getElementById('start').click(); true", user_gesture=True)
        page: dict = {}
        page["shown"] = await _wait_for(devtools, "!document.getElementById('room-panel').hidden", PAGE_TIMEOUT_S)
        page["link"] = await devtools.evaluate("document.getElementById('room-link').href")
        page["qr_loaded"] = await _wait_for(devtools, "document.getElementById('room-qr').naturalWidth > 0", 10)
        room_id = page["link"].split("/room/")[1].split("?")[0]
        key = page["link"].split("key=")[1]
        captions = f"ws://127.0.0.1:{app.ports[0]}{wire.captions_path(room_id)}?key={key}&target="
        async with connect(captions + "es"), connect(captions + "es"), connect(captions + "zh"):
            page["readers"] = await _wait_for(
                devtools, "document.getElementById('room-readers').textContent.includes('3 listeners') && "
                "document.getElementById('room-readers').textContent", PAGE_TIMEOUT_S, poll_s=0.3,
            )  # fmt: skip
            await devtools.call("Emulation.setDeviceMetricsOverride", width=DESKTOP[0], height=DESKTOP[1],
                                deviceScaleFactor=1, mobile=False)  # fmt: skip
            await devtools.screenshot(shots / "room-speaker.png")
            await devtools.call(
                "Emulation.setDeviceMetricsOverride", width=PHONE[0], height=PHONE[1], deviceScaleFactor=2, mobile=True
            )
            await asyncio.sleep(0.5)
            await devtools.screenshot(shots / "room-speaker-phone.png")
            page["overflow_on_phone"] = await devtools.evaluate(
                "document.documentElement.scrollWidth > window.innerWidth"
            )
        await devtools.evaluate("document.getElementById('stop').click(); true")
        return page


def test_the_speakers_page_shares_a_room_with_its_link_qr_code_and_listener_counts(tmp_path):
    shots = _artefact_dir(tmp_path)
    wav = tmp_path / "silence.wav"
    _silent_wav(wav)

    async def main():
        app = App(ScriptedEngine(TALK, MarkingTranslator()), ServerConfig(host="127.0.0.1", port=0, funasr_port=None))
        await app.start()
        try:
            async with contextlib.AsyncExitStack() as stack:
                browser = _browser(f"http://127.0.0.1:{app.ports[0]}/", wav, tmp_path / "profile", DESKTOP)
                page_ws_url = await asyncio.to_thread(stack.enter_context, browser)
                return await _share(page_ws_url, app, shots)
        finally:
            await app.shutdown()

    page = asyncio.run(asyncio.wait_for(main(), 4 * PAGE_TIMEOUT_S))
    print(f"screenshots: {shots / 'room-speaker.png'} {shots / 'room-speaker-phone.png'}")
    assert page["shown"] and "/room/" in page["link"] and "key=" in page["link"], page
    assert page["qr_loaded"], "the QR code did not load"
    assert page["readers"] == "3 listeners (es: 2 · zh: 1)", page
    assert not page["overflow_on_phone"], "the speaker's page scrolls sideways on a phone with a room shown"
