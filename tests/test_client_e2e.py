"""`streamst-mic` end to end: the real command against a real `streamst-server` with the real models.

- a FLEURS clip played into a virtual microphone (a PulseAudio null sink; the client records its
  monitor through PortAudio's ALSA `pulse` device, at the device's own rate): captions shown and saved;
- `--file` with stdout not a terminal: plain lines, no escape sequences, SRT and JSONL saved;
- Ctrl-C in the middle of a segment: the segment's final is saved and the client exits 0;
- the server killed mid-stream and started again on the same port: the client reconnects, replays
  what the dead server had not finished, and the later finals arrive;
- bad input: an unknown device, an unreachable server, a refused handshake, a refused `start`.

One server (with a token) serves the whole module; it is stopped by its pid at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import sacrebleu

from streamst.server import process as server_process
from streamst.audio import decode_audio, write_wav
from streamst.types import SAMPLE_RATE_HZ

pytestmark = [pytest.mark.models, pytest.mark.slow]

TOKEN = "client-e2e-token"
SERVER_START_TIMEOUT_S = 300
RUN_TIMEOUT_S = 400  # the models share two cores with whatever else runs: generous
PULSE_START_TIMEOUT_S = 15
SINK = "streamst_vmic"
PULSE_PACKAGES = "apt-get install pulseaudio pulseaudio-utils libasound2-plugins libportaudio2"


def _chrf(hypothesis: str, reference: str) -> float:
    return sacrebleu.sentence_chrf(hypothesis, [reference]).score


# the server ------------------------------------------------------------------------------------------------


class ServerProcess:
    """`streamst-server` as a subprocess on a fixed port, so that it can be killed and started again."""

    def __init__(self, port: int, log_dir: Path) -> None:
        self.port = port
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None
        self.n_starts = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.n_starts += 1
        log_path = self.log_dir / f"server-{self.n_starts}.log"
        options = ("--token", TOKEN, "--max-backlog-ms", "600000", "--idle-timeout-s", "120")
        self.process = server_process.start(self.port, log_path, *options)
        server_process.wait_ready(self.port, self.process, log_path, SERVER_START_TIMEOUT_S)

    def kill(self) -> None:
        """As a crash would: SIGKILL, nothing finished, nothing sent."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        path = self.log_dir / f"server-{self.n_starts}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = ServerProcess(server_process.free_port(), tmp_path_factory.mktemp("server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# the client ------------------------------------------------------------------------------------------------


class ClientProcess:
    """`streamst-mic` as a subprocess; its stdout and stderr are collected line by line as they come."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamst.client.mic", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=None if env is None else os.environ | env,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def wait_for_stderr(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in line for line in self.err):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"streamst-mic never said {text!r}: {''.join(self.err)}")

    def interrupt(self) -> None:
        os.kill(self.process.pid, signal.SIGINT)

    def finish(self, timeout_s: float = RUN_TIMEOUT_S) -> int:
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"streamst-mic did not finish within {timeout_s} s: {''.join(self.err)}")
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)


def _run(args: list[str], timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamst.client.mic", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _assert_timeline(records: list[dict]) -> None:
    ids = [r["segment_id"] for r in records]
    assert ids == sorted(set(ids)), f"segment ids repeat or go back: {ids}"
    starts = [r["start_ms"] for r in records]
    assert starts == sorted(starts) and all(r["end_ms"] >= r["start_ms"] for r in records), records


# the virtual microphone -------------------------------------------------------------------------------------


class VirtualMic:
    """A private PulseAudio daemon with a null sink: what is played into the sink comes out of its
    monitor, which the ALSA `pulse` device (and so PortAudio, and so the client) records."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "run" / "native"
        self.process: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """For processes that use it: the client (which records the monitor) and paplay."""
        return {"PULSE_SERVER": f"unix:{self.socket}", "PULSE_SOURCE": f"{SINK}.monitor", "PULSE_SINK": SINK}

    def start(self) -> str | None:
        """Starts the daemon; returns why it cannot work here, or None when it does."""
        missing = [tool for tool in ("pulseaudio", "pactl", "paplay") if shutil.which(tool) is None]
        if missing:
            return f"{', '.join(missing)} not installed ({PULSE_PACKAGES})"
        run_dir, home = self.root / "run", self.root / "home"
        run_dir.mkdir(mode=0o700)
        home.mkdir()
        env = os.environ | {"HOME": str(home), "XDG_RUNTIME_DIR": str(run_dir), "PULSE_RUNTIME_PATH": str(run_dir)}
        command = [
            "pulseaudio",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--use-pid-file=no",
            "-n",  # no default.pa: no hardware, no D-Bus, just what is loaded here
            f"--load=module-native-protocol-unix socket={self.socket} auth-anonymous=1",
            f"--load=module-null-sink sink_name={SINK} rate=48000",
            "--log-target=stderr",
        ]
        log = open(self.root / "pulseaudio.log", "wb")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + PULSE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return f"pulseaudio exited with {self.process.returncode}: {self._log()}"
            info = subprocess.run(["pactl", "info"], env=os.environ | self.env, capture_output=True, check=False)
            if info.returncode == 0:
                return self._check_portaudio()
            time.sleep(0.2)
        return f"pulseaudio did not answer within {PULSE_START_TIMEOUT_S} s: {self._log()}"

    def _check_portaudio(self) -> str | None:
        listed = subprocess.run(
            [sys.executable, "-m", "streamst.client.mic", "--list-devices"],
            env=os.environ | self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if listed.returncode != 0 or " pulse (" not in listed.stdout:
            return (
                "PortAudio does not see the ALSA 'pulse' device "
                f"({(listed.stderr or listed.stdout).strip() or 'no devices'}); "
                f"install sounddevice (pip install 'streamst[mic]') and {PULSE_PACKAGES}"
            )
        return None

    def play(self, path: Path) -> None:
        subprocess.run(["paplay", f"--device={SINK}", str(path)], env=os.environ | self.env, check=True, timeout=120)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def _log(self) -> str:
        return (self.root / "pulseaudio.log").read_text(errors="replace")[-1500:]


@pytest.fixture(scope="module")
def virtual_mic(tmp_path_factory):
    mic = VirtualMic(tmp_path_factory.mktemp("pulse"))
    reason = mic.start()
    try:
        if reason is not None:
            pytest.skip(f"no virtual microphone here: {reason}")
        yield mic
    finally:
        mic.stop()


# tests -----------------------------------------------------------------------------------------------------------


def test_a_fleurs_clip_played_into_a_virtual_microphone_is_captioned_and_saved(server, virtual_mic, fleurs, tmp_path):
    clip = fleurs["fleurs-en-000"]
    reference = clip["references"]["zh"]
    saved = tmp_path / "mic.jsonl"
    client = ClientProcess(
        ["-s", "en", "-t", "zh", "--device", "pulse", "--server", server.url, "--token", TOKEN, "--save", str(saved)]
        + ["--stop-timeout-s", str(RUN_TIMEOUT_S)],
        env=virtual_mic.env,
    )
    client.wait_for_stderr("connected: en→zh", timeout_s=120)
    virtual_mic.play(clip["path"])
    time.sleep(1.5)  # a pause after the sentence, as a speaker makes, then Ctrl-C
    client.interrupt()
    code = client.finish()
    records = _records(saved)
    translation = "".join(r["text"] for r in records)
    print(f"microphone: {translation!r}\nreference: {reference!r}\n{client.stderr}")
    assert code == 0, client.stderr
    assert "25" in translation and "30" in translation, translation
    assert _chrf(translation, reference) > 20
    assert client.stdout.splitlines() == [r["text"] for r in records], "shown as it was saved"
    _assert_timeline(records)


def test_an_unknown_device_names_the_way_to_list_them(virtual_mic):
    listed = subprocess.run(
        [sys.executable, "-m", "streamst.client.mic", "--list-devices"],
        env=os.environ | virtual_mic.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0 and " pulse (" in listed.stdout
    result = subprocess.run(
        [sys.executable, "-m", "streamst.client.mic", "-s", "en", "-t", "zh", "--device", "no-such-microphone"],
        env=os.environ | virtual_mic.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "streamst-mic: error: no input device matches 'no-such-microphone'; "
        "run `streamst-mic --list-devices` to see them\n"
    )


def test_a_file_is_captioned_in_plain_lines_when_stdout_is_not_a_terminal(server, fleurs, tmp_path):
    clip = fleurs["fleurs-en-000"]
    reference = clip["references"]["zh"]
    srt, jsonl = tmp_path / "out.srt", tmp_path / "out.jsonl"
    args = ["-s", "en", "-t", "zh", "--file", str(clip["path"]), "--server", server.url, "--token", TOKEN]
    waits = ["--stop-timeout-s", str(RUN_TIMEOUT_S)]  # the last captions may take long on a loaded machine
    result = _run([*args, *waits, "--save", str(srt), "--save", str(jsonl), "--show-source"], timeout_s=RUN_TIMEOUT_S)
    records = _records(jsonl)
    translation = "".join(r["text"] for r in records)
    print(f"file: {translation!r}\nreference: {reference!r}\n{result.stderr}")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout + result.stderr, "no escape sequences when stdout is not a terminal"
    lines = result.stdout.splitlines()
    assert [line for line in lines if not line.startswith("  [")] == [r["text"] for r in records]
    assert [line[3:-1] for line in lines if line.startswith("  [")] == [r["source_text"] for r in records]
    assert "25" in translation and "30" in translation, translation
    assert _chrf(translation, reference) > 20
    assert srt.read_text(encoding="utf-8").count(" --> ") == len(records) > 0
    assert "connected: en→zh" in result.stderr and f"stopped · {len(records)} caption" in result.stderr
    assert records[-1]["end_ms"] <= 1000 * clip["duration_s"] + 100
    _assert_timeline(records)


def test_ctrl_c_in_the_middle_of_a_segment_saves_its_final(server, fleurs, tmp_path):
    clip = fleurs["fleurs-en-000"]  # "However, due to the slow communication channels, | styles in the west …"
    saved = tmp_path / "out.jsonl"
    client = ClientProcess(
        ["-s", "en", "-t", "de", "--file", str(clip["path"]), "--server", server.url, "--token", TOKEN]
        + ["--save", str(saved), "--stop-timeout-s", str(RUN_TIMEOUT_S)]
    )
    client.wait_for_stderr("connected: en→de", timeout_s=120)
    time.sleep(6.5)  # into "styles in the west could lag …", which runs to about 8.7 s
    client.interrupt()
    code = client.finish()
    records = _records(saved)
    print(f"saved: {records}\n{client.stderr}")
    assert code == 0, client.stderr
    assert "stopping" in client.stderr
    interrupted = [r for r in records if r["start_ms"] > 3_500]
    assert interrupted, f"the interrupted segment's final was not saved: {records}"
    assert interrupted[-1]["end_ms"] < 8_000, "the audio stopped at the Ctrl-C"
    assert interrupted[-1]["text"].strip(), interrupted
    text = " ".join(r["text"] for r in records).lower()
    assert any(word in text for word in ("westen", "stil", "kommunikation")), text
    assert client.stdout.splitlines() == [r["text"] for r in records]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown device", "device"),
        ("unreachable server", "cannot reach the server at ws://127.0.0.1:"),
        ("no token", "the server refused the connection (HTTP 401 unauthorized): this server needs a token"),
        ("wrong token", "the server refused the connection (HTTP 401 unauthorized)"),
        ("unknown language", "the server refused the stream:"),
    ],
)
def test_bad_input_is_a_one_line_error(server, fleurs, case, expected):
    clip = str(fleurs["fleurs-en-004"]["path"])
    args = {
        "unknown device": ["-s", "en", "-t", "zh", "--device", "no-such-microphone-here", "--server", server.url],
        "unreachable server": ["-s", "en", "-t", "zh", "--file", clip, "--server", f"127.0.0.1:{server_process.free_port()}"],
        "no token": ["-s", "en", "-t", "zh", "--file", clip, "--server", server.url],
        "wrong token": ["-s", "en", "-t", "zh", "--file", clip, "--server", server.url, "--token", "nope"],
        "unknown language": ["-s", "en", "-t", "klingon", "--file", clip, "--server", server.url, "--token", TOKEN],
    }[case]
    result = _run(args)
    print(result.stderr)
    assert result.returncode == 2
    assert result.stderr.startswith("streamst-mic: error: ") and expected in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_the_client_reconnects_when_the_server_is_killed_and_restarted(server, fleurs, tmp_path):
    first, second = fleurs["fleurs-en-000"], fleurs["fleurs-en-004"]
    silence = np.zeros(int(1.5 * SAMPLE_RATE_HZ), dtype=np.float32)
    talk = tmp_path / "talk.wav"
    write_wav(talk, np.concatenate([decode_audio(first["path"]), silence, decode_audio(second["path"]), silence]))
    saved = tmp_path / "out.jsonl"
    client = ClientProcess(
        ["-s", "en", "-t", "zh", "--file", str(talk), "--server", server.url, "--token", TOKEN, "--save", str(saved)]
        + ["--max-buffer-s", "60", "--stop-timeout-s", str(RUN_TIMEOUT_S), "--max-reconnect-s", "300"]
    )
    client.wait_for_stderr("connected: en→zh", timeout_s=120)
    time.sleep(6.0)  # mid-stream: 6 s of about 17
    server.kill()
    n_before = len(_records(saved))
    client.wait_for_stderr("reconnecting", timeout_s=30)
    server.start()
    code = client.finish()
    records = _records(saved)
    translation = "".join(r["text"] for r in records)
    print(f"{n_before} final(s) before the kill; all: {translation!r}\n{client.stderr}")
    assert code == 0, client.stderr
    assert len(records) > n_before, "finals arrived after the restart"
    assert "25" in translation and "30" in translation, translation
    assert sum("25" in r["text"] for r in records) == 1, "nothing was captioned twice"
    assert "恐龙" in translation or "羽毛" in translation, translation  # dinosaurs, feathers: after the restart
    assert records[-1]["start_ms"] > 1000 * first["duration_s"], "the second clip sits after the first"
    _assert_timeline(records)
    assert client.stdout.splitlines() == [r["text"] for r in records]
