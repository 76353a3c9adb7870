"""`streamst-bench load` without a server: its argument errors, its programmes, and how a client's
captions are scored (synthetic captions at known times)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from streamst.benchmarks import load
from streamst.benchmarks.cli import main
from streamst.benchmarks.datasets import ReferenceSegment, SpeechInstance, parse_pairs
from streamst.client.stream import Received, StreamResult, pcm_frames
from test_bench_cli import data_dir, one_line_error  # noqa: F401 (data_dir is a fixture)

from streamst import wire
from streamst.types import SAMPLES_PER_MS


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if a command got as far as starting a server."""

    def refuse(*args, **kwargs):
        raise AssertionError("a server was started")

    monkeypatch.setattr("streamst.server.process.start", refuse)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--clients", "0"], "argument --clients: '0' must be at least 1"),
        (["--clients", "1,two"], "'two' is not a whole number"),
        (["--clients", ","], "give at least one number of clients"),
        (["--mode", "telepathy"], "invalid choice: 'telepathy'"),
        (["--duration-s", "0"], "--duration-s: 0 is not positive"),
        (["--threads", "0"], "must be at least 1"),
        (["--target", "xx"], "unknown pair 'en-xx'"),
        (["--source", "en", "--target", "en"], "translates a language into itself"),
    ],
)
def test_load_argument_errors(capsys, tmp_path, data_dir, args: list[str], message: str) -> None:
    err = one_line_error(capsys, ["load", *args, "--data-dir", str(data_dir), "-o", str(tmp_path / "out")])
    assert message in err


def test_load_without_data_or_output(capsys, tmp_path) -> None:
    assert "--output" in one_line_error(capsys, ["load"])
    err = one_line_error(capsys, ["load", "--data-dir", str(tmp_path), "-o", str(tmp_path / "out")])
    assert "FLEURS-mini not found" in err and "--data-dir" in err


def test_load_help(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["load", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(option in out for option in ("--clients", "--duration-s", "--mode", "--url", "--output"))


# programmes and scoring --------------------------------------------------------------------------------


def clip(clip_id: str, duration_ms: int, reference: str) -> SpeechInstance:
    segment = ReferenceSegment(0.0, float(duration_ms), "", {"de": reference})
    audio = np.full(duration_ms * SAMPLES_PER_MS, 0.1, dtype=np.float32)
    return SpeechInstance(clip_id, "en", float(duration_ms), "", {"de": reference}, (segment,), audio=audio)


CLIPS = [clip("a", 2000, "Hallo Welt."), clip("b", 1000, "Gut.")]
PAIR = parse_pairs("en-de")[0]


def test_programme_cycles_the_clips_with_a_gap_after_each() -> None:
    stream = load.programme(CLIPS, first=1, duration_s=4.5)
    # b (1 s), gap, a (2 s), gap: 5 s >= 4.5 s
    assert [(s.start_ms, s.end_ms) for s in stream.segments] == [(0, 1000), (2000, 4000)]
    assert [s.references["de"] for s in stream.segments] == ["Gut.", "Hallo Welt."]
    assert stream.audio.size == 5000 * SAMPLES_PER_MS and stream.duration_ms == 5000
    assert not stream.audio[1000 * SAMPLES_PER_MS : 2000 * SAMPLES_PER_MS].any()


def caption(kind: str, segment_id: int, text: str, delta: str, span_ms: tuple[int, int], audio_ms: int):
    start_ms, end_ms = span_ms
    return wire.Caption(kind, segment_id, text, delta, "", "", start_ms, end_ms, "cascade", audio_ms)


def result(*messages: tuple[wire.ServerMessage, float]) -> StreamResult:
    return StreamResult(tuple(Received(m, at_s) for m, at_s in messages), wire.CLOSE_NORMAL, 5.0, 5.0)


def test_a_client_that_kept_up_is_scored_per_clip() -> None:
    stream = load.programme(CLIPS, first=0, duration_s=4.0)  # a at 0-2000 ms, b at 3000-4000 ms
    streamed = result(
        (caption("partial", 0, "Hallo", "Hallo", (100, 1500), 1500), 1.7),
        (caption("final", 0, "Hallo Welt.", " Welt.", (100, 1900), 2500), 2.6),
        (caption("final", 1, "Gut.", "Gut.", (3100, 3900), 4500), 4.8),
        (wire.End("stop", 5000, 2), 5.5),
    )
    report = load.score_client(1, 0, streamed, stream, PAIR)
    assert report.n_instances == 2 and report.errors == "-"
    assert report.first_commit_ca_ms == pytest.approx((1700 + 1800) / 2)  # from each clip's start
    assert report.max_lag_s == pytest.approx(0.3) and report.end_lag_s == pytest.approx(0.5)
    assert report.kept_up and report.chrf == pytest.approx(100)
    assert 0 < report.laal_ms < report.laal_ca_ms < 2500


def test_a_client_ended_by_an_error_did_not_keep_up() -> None:
    stream = load.programme(CLIPS, first=0, duration_s=4.0)
    streamed = result(
        (caption("partial", 0, "Hallo", "Hallo", (100, 1500), 1500), 9.0),
        (wire.Error(wire.ErrorCode.TOO_SLOW, "too far behind"), 9.5),
    )
    report = load.score_client(2, 1, streamed, stream, PAIR)
    assert (report.n_clients, report.client, report.n_instances) == (2, 1, 1)
    assert report.errors == "too_slow" and not report.kept_up and math.isinf(report.end_lag_s)
    assert report.max_lag_s == pytest.approx(7.5)
    assert report.chrf < 100


def test_pcm_frames_follow_the_start_format() -> None:
    start = wire.Start("en", "zh", sample_rate_hz=48_000, sample_format="float32")
    frames = pcm_frames(b"\x00" * (4 * 4800), start, frame_ms=40)  # 100 ms: 40 + 40 + 20
    assert [len(f) for f in frames] == [4 * 1920, 4 * 1920, 4 * 960]
