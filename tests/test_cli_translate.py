"""`streamst translate` bad input: each ends with one line on stderr and exit code 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from streamst import registry


def run_cli(*args: str, env: dict[str, str] | None = None, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamst", *args],
        capture_output=True, text=True, timeout=timeout_s, env={**os.environ, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("streamst: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def write_wav(path: Path, audio: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def test_missing_file(tmp_path):
    result = run_cli("translate", str(tmp_path / "nope.wav"), "-s", "en", "-t", "zh")
    assert_one_line_error(result, "not found", "nope.wav")


def test_undecodable_file(tmp_path):
    bad = tmp_path / "noise.mp3"
    bad.write_bytes(os.urandom(4096))
    result = run_cli("translate", str(bad), "-s", "en", "-t", "zh")
    assert_one_line_error(result, "noise.mp3")


def test_empty_audio(tmp_path):
    result = run_cli("translate", str(write_wav(tmp_path / "empty.wav", np.zeros(0))), "-s", "en", "-t", "zh")
    assert_one_line_error(result, "empty.wav")


def test_unknown_language(tmp_path):
    audio = write_wav(tmp_path / "a.wav", np.zeros(16_000))
    assert_one_line_error(run_cli("translate", str(audio), "-s", "xx", "-t", "zh"), "xx")
    assert_one_line_error(run_cli("translate", str(audio), "-s", "en", "-t", "klingon"), "klingon")


@pytest.mark.parametrize(
    ("options", "needles"),
    [
        (("--policy", "la", "--n", "1"), ("n must be at least 2, got 1",)),
        (("--policy", "wait-k", "--k", "-1"), ("k must be at least 0",)),
        (("--policy", "confidence", "--tau", "1.5"), ("tau must be between 0 and 1 (exclusive)",)),
        (("--mode", "cascade", "--policy", "la"), ("cascade", "no policy 'la'", "sentence, segment")),
        (("--mode", "cascade", "--k", "2"), ("--k does not apply to cascade/sentence", "--step-ms")),
        (("--policy", "wait-k", "--n", "2"), ("--n does not apply to direct/wait-k", "--k")),
        (("--step-ms", "20"), ("step_ms", "100")),
        (("--context-sentences", "-1"), ("translation_context must be 0 or more sentences",)),
    ],
)
def test_bad_direct_mode_options(tmp_path, options, needles):
    audio = write_wav(tmp_path / "a.wav", np.zeros(16_000))
    assert_one_line_error(run_cli("translate", str(audio), "-s", "en", "-t", "de", *options), *needles)


def test_model_not_pulled_names_the_command(tmp_path):
    audio = write_wav(tmp_path / "a.wav", np.zeros(16_000))
    result = run_cli("translate", str(audio), "-s", "en", "-t", "zh", env={"STREAMST_HOME": str(tmp_path / "home")})
    assert_one_line_error(result, "streamst models pull")


@pytest.mark.models
def test_silent_audio_invents_nothing(tmp_path):
    rng = np.random.default_rng(0)
    hum = 0.001 * rng.standard_normal(16_000 * 4)
    result = run_cli("translate", str(write_wav(tmp_path / "quiet.wav", hum)), "-s", "en", "-t", "zh")
    assert_one_line_error(result, "no speech")
    assert result.stdout.strip() == ""


@pytest.mark.models
def test_corrupt_model_file(tmp_path):
    home = tmp_path / "home"
    models = home / "models"
    models.mkdir(parents=True)
    real = registry.model_path("silero-vad").parent
    for name in ("whisper-base", "qwen2.5-coder-0.5b-instruct-q4km"):
        (models / name).symlink_to(real / name)
    shutil.copytree(real / "silero-vad", models / "silero-vad")
    onnx = models / "silero-vad" / "silero_vad.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    audio = write_wav(tmp_path / "a.wav", np.zeros(16_000))
    result = run_cli("translate", str(audio), "-s", "en", "-t", "zh", env={"STREAMST_HOME": str(home)})
    assert_one_line_error(result, "silero", "streamst models pull")


@pytest.mark.models
def test_a_finals_decoder_not_pulled_names_it_and_the_command(tmp_path):
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    for name in ("silero-vad", "whisper-base", "qwen2.5-coder-0.5b-instruct-q4km"):  # all but the 1.5B
        (home / "models" / name).symlink_to(registry.model_path(name))
    audio = write_wav(tmp_path / "a.wav", np.zeros(16_000))
    result = run_cli("translate", str(audio), "-s", "en", "-t", "zh", env={"STREAMST_HOME": str(home)})
    assert_one_line_error(result, "qwen2.5-coder-1.5b-instruct-q4km", "streamst models pull")


@pytest.mark.parametrize("name", ["no-such-model", "silero-vad"])
def test_a_translator_that_is_not_one(tmp_path, name):
    audio = write_wav(tmp_path / "tone.wav", np.zeros(16_000))
    result = run_cli("translate", str(audio), "-s", "en", "-t", "zh", "--translator", name)
    assert_one_line_error(result, name, "qwen2.5-coder-0.5b-instruct-q4km", "qwen2.5-coder-1.5b-instruct-q4km")
