"""The decoder on llama.cpp's `llama-server` (built by scripts/build_llama_server.sh), with the real
default GGUF and real FLEURS speech, on 127.0.0.1:

- a session translating through llama-server finals the same translation as the in-process decoder
  (or within 2 chrF, where the engines' numerics differ);
- `streamst-server --translator-url` streams a FLEURS clip through it at real time and finals what
  an in-process session finals (the cascade at each segment's end, which no pacing changes);
- killing llama-server mid-stream ends the stream's segments finished by the cascade way or with a
  clear error naming the URL, in bounded time, never a hang.

Skips with the reason when the binary, the models or ../shared/data are absent. Every process is
started on a free port and stopped by its pid; every wait is bounded."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import numpy as np
import pytest
import sacrebleu

from streamst import wire
from streamst.audio import decode_audio, float32_to_pcm16
from streamst.client.stream import stream_pcm
from streamst.clock import SimulatedClock
from streamst.engine import Engine, EngineConfig, gguf_path
from streamst.options import session_options
from streamst.presets import QUALITY_PRESETS, SERVER_QUALITY
from streamst.server import llama_server
from streamst.server import process as server_process
from streamst.translators.openai_server import ServerOptions
from streamst.types import SAMPLE_RATE_HZ, FinalEvent

CLIP = "fleurs-en-000"
PAIR = ("en", "de")
CHUNK_SAMPLES = 1_600  # 100 ms pushes
MAX_CHRF_GAP = 2.0
STREAM_TIMEOUT_S = 240.0
READY_CHANGE_TIMEOUT_S = 15.0  # the decoder is probed every 2 s, each probe at most 4 s
DECODER = llama_server.LlamaServerOptions(n_threads=1, n_slots=2)

pytestmark = [
    pytest.mark.models,
    pytest.mark.slow,
    pytest.mark.skipif(
        llama_server.binary_path() is None,
        reason=f"llama-server is not built: run {llama_server.BUILD_COMMAND} (scripts/test.sh does)",
    ),
]


@pytest.fixture(scope="module")
def gguf():
    try:
        return gguf_path(QUALITY_PRESETS[SERVER_QUALITY].steps)
    except Exception as e:  # noqa: BLE001 - any reason the model is not there is a reason to skip
        pytest.skip(f"the default decoder is not pulled ({e}); run: streamst models pull default")


@pytest.fixture(scope="module")
def decoder(gguf, tmp_path_factory):
    """llama-server with the default GGUF, one thread, two slots."""
    port = server_process.free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "llama-server.log"
    with llama_server.running(gguf, port, log_path, DECODER) as process:
        yield llama_server.api_url(port), process


def _audio(fleurs, clip_id: str) -> np.ndarray:
    return decode_audio(fleurs[clip_id]["path"])


def _session_translation(engine: Engine, audio: np.ndarray, mode: str = "direct") -> tuple[str, list[FinalEvent]]:
    """A session over the clip on a simulated clock: its finals' text. The cascade's `segment`
    policy translates each segment once, at its end, whatever the pacing: what a server streaming
    at real time must also final."""
    options = session_options(mode, "segment") if mode == "cascade" else None
    session = engine.session(*PAIR, mode=mode, clock=SimulatedClock(), options=options)
    events = []
    for start in range(0, len(audio), CHUNK_SAMPLES):
        events += session.push(audio[start : start + CHUNK_SAMPLES])
    events += session.finish()
    finals = [e for e in events if isinstance(e, FinalEvent)]
    return " ".join(f.committed_text.strip() for f in finals).strip(), finals


def _readyz_until(port: int, done: Callable[[int, str], bool], timeout_s: float) -> tuple[int, str]:
    """GET /readyz every 0.2 s until `done(status, body)` or the timeout; the last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                answer = response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            answer = e.code, e.read().decode()
        if done(*answer) or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


def _chrf(hypothesis: str, reference: str) -> float:
    return sacrebleu.sentence_chrf(hypothesis, [reference]).score


@pytest.fixture(scope="module")
def in_process(fleurs) -> dict[str, str]:
    """The in-process decoder's translations of the clip, by mode: the GGUF llama-server has, for
    steps and finals alike, as a remote decoder does both."""
    one_gguf = QUALITY_PRESETS[SERVER_QUALITY].steps
    engine = Engine(EngineConfig(n_threads=1, translator_model=one_gguf, finals_model=""))
    return {mode: _session_translation(engine, _audio(fleurs, CLIP), mode)[0] for mode in ("direct", "cascade")}


def test_a_session_on_llama_server_finals_what_the_in_process_decoder_finals(decoder, fleurs, in_process):
    url, _ = decoder
    remote = Engine(EngineConfig(n_threads=1, translator_server=ServerOptions(url=url, model=DECODER.alias)))
    text, finals = _session_translation(remote, _audio(fleurs, CLIP))
    in_process = in_process["direct"]
    reference = fleurs[CLIP]["references"][PAIR[1]]
    chrf_in_process, chrf_remote = _chrf(in_process, reference), _chrf(text, reference)
    print(f"in-process: {in_process!r} (chrF {chrf_in_process:.1f})\nllama-server: {text!r} (chrF {chrf_remote:.1f})")
    assert finals and all(f.mode == "direct" for f in finals), [(f.mode, f.fallback_reason) for f in finals]
    assert text == in_process or abs(chrf_remote - chrf_in_process) <= MAX_CHRF_GAP


def test_streamst_server_translates_through_llama_server_and_survives_its_death(gguf, fleurs, in_process, tmp_path):
    decoder_port, server_port = server_process.free_port(), server_process.free_port()
    url = llama_server.api_url(decoder_port)
    start = wire.Start(*PAIR, mode="direct")
    segment_start = wire.Start(*PAIR, mode="cascade", policy="segment")
    clip = _audio(fleurs, CLIP)
    silence = np.zeros(SAMPLE_RATE_HZ, dtype=np.float32)
    talk = np.concatenate([_audio(fleurs, "fleurs-en-004"), silence, clip, silence])
    with llama_server.running(gguf, decoder_port, tmp_path / "llama-server.log", DECODER) as decoder_process:
        options = ("--translator-url", url, "--translator-api-model", DECODER.alias, "--threads", "1",
                   "--finish-timeout-s", "120")  # fmt: skip
        with server_process.running(server_port, tmp_path / "server.log", *options):
            ws_url = f"ws://127.0.0.1:{server_port}{wire.STREAM_PATH}"

            async def stream(audio: np.ndarray, start: wire.Start, kill_after_s: float | None = None):
                streaming = asyncio.create_task(stream_pcm(ws_url, start, float32_to_pcm16(audio)))
                if kill_after_s is not None:
                    await asyncio.sleep(kill_after_s)
                    decoder_process.send_signal(signal.SIGKILL)
                return await asyncio.wait_for(streaming, STREAM_TIMEOUT_S)

            whole = asyncio.run(stream(np.concatenate([clip, silence]), segment_start))
            killed = asyncio.run(stream(talk, start, kill_after_s=4.0))
            unready = _readyz_until(server_port, lambda status, _: status == 503, READY_CHANGE_TIMEOUT_S)
        log = (tmp_path / "server.log").read_text(errors="replace")

    translation = " ".join(f.committed_text.strip() for f in whole.finals).strip()
    in_process = in_process["cascade"]
    reference = fleurs[CLIP]["references"][PAIR[1]]
    print(f"through streamst-server: {translation!r} (chrF {_chrf(translation, reference):.1f}); "
          f"in-process session: {in_process!r} (chrF {_chrf(in_process, reference):.1f})")  # fmt: skip
    assert not whole.errors and whole.end is not None, whole.messages
    assert translation == in_process or abs(_chrf(translation, reference) - _chrf(in_process, reference)) <= MAX_CHRF_GAP

    # After the kill: every segment is finished by the cascade way or the stream ends with an error
    # that names the decoder's URL; the stream ends (no hang) and nothing else goes wrong.
    print(f"after the kill: finals {[(f.mode, f.committed_text) for f in killed.finals]}, errors {killed.errors}")
    fallbacks = [f for f in killed.finals if f.mode == "cascade"]
    errors = [e for e in killed.errors if e.code == wire.ErrorCode.ENGINE_ERROR and url in e.message]
    assert fallbacks or errors, killed.messages
    assert all(e.code == wire.ErrorCode.ENGINE_ERROR for e in killed.errors), killed.errors
    assert "Traceback" not in log or "engine_error" in log
    # The replica then says it cannot take new sessions, and why, so a balancer sends them elsewhere.
    assert unready[0] == 503 and url in unready[1], unready
