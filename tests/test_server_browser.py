"""The browser page end to end: headless Chromium with a fake microphone playing a FLEURS clip opens
the page, starts the microphone, and the rendered captions hold the expected translation; a session
started with a policy and knob chosen on the page runs with them.

Chromium is driven over the DevTools protocol with the websockets client (no extra packages). The
screenshot is saved as a test artefact: $STREAMST_ARTEFACTS or the pytest tmp dir, and its path is
printed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect

from streamst.server import process as server_process
from streamst.audio import decode_audio, write_wav
from streamst.types import SAMPLE_RATE_HZ

pytestmark = [pytest.mark.models, pytest.mark.slow]

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--remote-debugging-port=0",
)
CLIP_ID = "fleurs-en-000"
LEAD_SILENCE_S = 0.5
TAIL_SILENCE_S = 3.0
CAPTION_TIMEOUT_S = 240.0
LIVE_TIMEOUT_S = 60.0
SERVER_START_TIMEOUT_S = 120.0
DESKTOP = (1280, 720)
PHONE = (390, 844)
POLICY, KNOB = "wait-k", 2  # not the direct mode's defaults (la, wait-k's k=3)
SILENCE_S = 5.0


def _chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is not installed (apt-get install chromium)")


@contextlib.contextmanager
def _browser(url: str, wav: Path, profile: Path, viewport: tuple[int, int]):
    command = [
        _chromium(),
        *CHROMIUM_FLAGS,
        f"--use-file-for-fake-audio-capture={wav}%noloop",
        f"--user-data-dir={profile}",
        f"--window-size={viewport[0]},{viewport[1]}",
        url,
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield _devtools_page_url(process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _devtools_page_url(process: subprocess.Popen) -> str:
    """The page target's DevTools WebSocket URL, from the port Chromium prints on stderr."""
    deadline = time.monotonic() + 30
    port = None
    while port is None and time.monotonic() < deadline:
        line = process.stderr.readline().decode("utf-8", "replace")
        if not line and process.poll() is not None:
            pytest.fail(f"Chromium exited with {process.returncode}")
        match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
        if match:
            port = int(match.group(1))
    if port is None:
        pytest.fail("Chromium did not open its DevTools port")
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
            pages = [t for t in json.load(response) if t.get("type") == "page"]
        if pages:
            return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.2)
    pytest.fail("Chromium shows no page")


class DevTools:
    """Just enough of the Chrome DevTools protocol: evaluate JavaScript, take screenshots."""

    def __init__(self, ws) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params):
        call_id = next(self._ids)
        await self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            reply = json.loads(await self._ws.recv())
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    async def evaluate(self, expression: str, user_gesture: bool = False):
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True, userGesture=user_gesture
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> None:
        result = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(result["data"]))


async def _wait_for(devtools: DevTools, expression: str, timeout_s: float, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await devtools.evaluate(expression)
        if value:
            return value
        await asyncio.sleep(poll_s)
    return await devtools.evaluate(expression)


def _fake_microphone_wav(clip_path: Path, out: Path) -> None:
    audio = decode_audio(clip_path)
    lead = np.zeros(int(LEAD_SILENCE_S * SAMPLE_RATE_HZ), dtype=np.float32)
    tail = np.zeros(int(TAIL_SILENCE_S * SAMPLE_RATE_HZ), dtype=np.float32)
    write_wav(out, np.concatenate([lead, audio, tail]), SAMPLE_RATE_HZ)


def _silent_wav(out: Path) -> None:
    write_wav(out, np.zeros(int(SILENCE_S * SAMPLE_RATE_HZ), dtype=np.float32), SAMPLE_RATE_HZ)


def _artefact_dir(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("STREAMST_ARTEFACTS", tmp_path))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


async def _run_page(page_ws_url: str, screenshot: Path) -> dict:
    async with connect(page_ws_url, max_size=2**26) as ws:
        devtools = DevTools(ws)
        await devtools.call("Page.enable")
        loaded = await _wait_for(devtools, "document.querySelectorAll('#target option').length > 0", 30)
        assert loaded, "the page did not load its language list"
        await devtools.evaluate(
            "document.getElementById('source').value = 'en';"
            "document.getElementById('target').value = 'zh';"
            "document.getElementById('show-source').click(); true"
        )
        await devtools.evaluate("document.getElementById('start').click(); true", user_gesture=True)
        live = await _wait_for(devtools, "document.getElementById('status').className.includes('live')", LIVE_TIMEOUT_S)
        status = await devtools.evaluate("document.getElementById('status').textContent")
        assert live, f"the page did not go live; its status says: {status}"
        await _wait_for(
            devtools,
            "/25/.test(document.getElementById('captions').innerText) && "
            "/30/.test(document.getElementById('captions').innerText) && "
            "document.querySelectorAll('.segment.final').length > 0",
            CAPTION_TIMEOUT_S,
            poll_s=1.0,
        )
        await devtools.screenshot(screenshot)
        await devtools.call(
            "Emulation.setDeviceMetricsOverride", width=PHONE[0], height=PHONE[1], deviceScaleFactor=2, mobile=True
        )
        await asyncio.sleep(0.5)
        await devtools.screenshot(screenshot.with_name(screenshot.stem + "-phone.png"))
        overflow = await devtools.evaluate("document.documentElement.scrollWidth > window.innerWidth")
        return {
            "overflow_on_phone": overflow,
            "captions": await devtools.evaluate(
                "document.querySelector('#captions .segment') ? "
                "[...document.querySelectorAll('#captions .target')].map(e => e.innerText).join('') : ''"
            ),
            "status": await devtools.evaluate("document.getElementById('status').textContent"),
            "srt_enabled": await devtools.evaluate("!document.getElementById('download-srt').disabled"),
        }


def _choose(element_id: str, value: str) -> str:
    """JavaScript that picks `value` in a control as a user would (a change event follows)."""
    return (
        f"(e => {{ e.value = {json.dumps(value)}; e.dispatchEvent(new Event('change')); return e.value; }})"
        f"(document.getElementById({json.dumps(element_id)}))"
    )


KNOB_INPUT = (
    "({name: document.getElementById('knob-name').textContent, value: document.getElementById('knob').value,"
    " min: document.getElementById('knob').min, step: document.getElementById('knob').step})"
)


async def _start_with_policy(page_ws_url: str, url_with_params: str) -> dict:
    """Lists the direct policies, starts a session with POLICY and KNOB chosen on the page, and
    reloads the page with them as URL parameters."""
    async with connect(page_ws_url, max_size=2**26) as ws:
        devtools = DevTools(ws)
        await devtools.call("Page.enable")
        loaded = await _wait_for(
            devtools,
            "document.querySelectorAll('#policy option').length > 0 && "
            "document.querySelectorAll('#target option').length > 0",
            30,
        )
        assert loaded, "the page did not load its policies and languages"
        page: dict = {"mode": await devtools.evaluate(_choose("mode", "direct"))}
        page["policies"] = await devtools.evaluate("[...document.querySelectorAll('#policy option')].map(o => o.value)")
        page["default_policy"] = await devtools.evaluate("document.getElementById('policy').value")
        page["chosen"] = await devtools.evaluate(_choose("policy", POLICY))
        page["knob"] = await devtools.evaluate(KNOB_INPUT)
        await devtools.evaluate(
            f"document.getElementById('knob').value = '{KNOB}';"
            "document.getElementById('source').value = 'en';"
            "document.getElementById('target').value = 'zh'; true"
        )
        await devtools.evaluate("document.getElementById('start').click(); true", user_gesture=True)
        page["live"] = await _wait_for(
            devtools, "document.getElementById('status').className.includes('live')", LIVE_TIMEOUT_S
        )
        page["status"] = await devtools.evaluate("document.getElementById('status').textContent")
        page["locked_while_live"] = await devtools.evaluate(
            "document.getElementById('policy').disabled && document.getElementById('knob').disabled"
        )
        await devtools.evaluate("document.getElementById('stop').click(); true")
        await devtools.call("Page.navigate", url=url_with_params)
        reloaded = await _wait_for(
            devtools, "location.search.includes('policy') && document.querySelectorAll('#policy option').length", 30
        )
        assert reloaded, f"the page did not load from {url_with_params}"
        page["from_url"] = await devtools.evaluate(
            "[document.getElementById('policy').value, document.getElementById('knob').value]"
        )
        return page


@pytest.fixture(scope="module")
def server_port(tmp_path_factory) -> Iterator[int]:
    """One server with the real models, on 127.0.0.1, for the tests of this file."""
    port = server_process.free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with server_process.running(port, log_path, "--max-backlog-ms", "600000", ready_timeout_s=SERVER_START_TIMEOUT_S):
        yield port


def test_browser_page_shows_live_translation(fleurs, server_port, tmp_path):
    clip = fleurs[CLIP_ID]
    wav = tmp_path / "microphone.wav"
    _fake_microphone_wav(clip["path"], wav)
    screenshot = _artefact_dir(tmp_path) / "browser-captions.png"
    page_url = f"http://127.0.0.1:{server_port}/"
    with _browser(page_url, wav, tmp_path / "profile", DESKTOP) as devtools_url:
        page = asyncio.run(_run_page(devtools_url, screenshot))
    print(f"screenshots: {screenshot} {screenshot.with_name(screenshot.stem + '-phone.png')}")
    captions = page["captions"]
    assert "25" in captions and "30" in captions, f"captions lack the numbers of the reference: {captions!r}"
    assert re.search(r"[\u4e00-\u9fff]", captions), f"captions are not Chinese: {captions!r}"
    assert page["srt_enabled"], "the SRT download stays disabled after a final"
    assert not page["overflow_on_phone"], "the page scrolls sideways on a phone-sized viewport"
    assert screenshot.stat().st_size > 10_000


def test_browser_page_starts_the_chosen_policy(server_port, tmp_path):
    base_url = f"http://127.0.0.1:{server_port}/"
    with urllib.request.urlopen(f"{base_url}v1/status", timeout=10) as response:
        direct = json.load(response)["policies"]["direct"]
    knob = direct["policies"][POLICY]["knob"]
    wav = tmp_path / "silence.wav"
    _silent_wav(wav)
    url_with_params = f"{base_url}?mode=direct&policy={POLICY}&knob={KNOB}"
    with _browser(base_url, wav, tmp_path / "profile", DESKTOP) as devtools_url:
        page = asyncio.run(_start_with_policy(devtools_url, url_with_params))
    assert page["mode"] == "direct", f"the page offers no direct mode: {page}"
    assert page["policies"] == list(direct["policies"]), f"the policy select differs from /v1/status: {page}"
    assert page["default_policy"] == direct["default_policy"], f"the default policy is not preselected: {page}"
    assert page["chosen"] == POLICY
    expected_knob = {"name": knob["name"], "value": str(knob["default"]), "min": str(knob["minimum"]), "step": "1"}
    assert page["knob"] == expected_knob, f"the knob input does not show {POLICY}'s knob: {page}"
    assert page["live"], f"the session did not go live; the page says: {page['status']}"
    in_force = f"direct, {POLICY} {knob['name']}={KNOB}"
    assert in_force in page["status"], f"the status line lacks {in_force!r}: {page['status']}"
    assert page["locked_while_live"], "the policy and knob stay editable while the session runs"
    assert page["from_url"] == [POLICY, str(KNOB)], f"the URL parameters did not preselect the policy: {page}"
