"""The whole engine with SenseVoice: a tiny random SenseVoiceSmall in the registry becomes the
encoder for its languages automatically, and real speech runs end to end in direct and cascade
mode, translated by a tiny random Qwen2 through the transformers backend and the policies.

The VAD (and Whisper, the engine's encoder for other languages) are the real pulled models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason="the tiny translator needs transformers: pip install 'streamst[torch]'")

from test_sensevoice import MODEL_NAME, build_tiny_sensevoice, write_manifest
from test_transformers_translator import build_tiny_qwen

from streamst import registry
from streamst.audio import decode_audio
from streamst.clock import SimulatedClock
from streamst.encoders.sensevoice import SenseVoiceOptions
from streamst.encoders.sensevoice.export import export_onnx
from streamst.engine import Engine, EngineConfig
from streamst.errors import ModelNotPulledError
from streamst.languages import resolve
from streamst.sessions.cascade import CascadeOptions
from streamst.options import session_options
from streamst.translators.base import Translator
from streamst.translators.transformers_backend import TransformersOptions, TransformersTranslator
from streamst.types import FinalEvent, PartialEvent

SHARED_MODELS = ("silero-vad", "whisper-base")
CHUNK_MS = 100
CLIP_S = 5.0


class TinyTranslatorEngine(Engine):
    """The engine with the tiny Qwen2 (transformers) in place of the GGUF decoder."""

    def __init__(self, config: EngineConfig, qwen_dir: Path) -> None:
        super().__init__(config)
        self.qwen_dir = qwen_dir

    def _load_translator(self) -> Translator:
        options = TransformersOptions(device="cpu", min_new_tokens_cap=8, new_tokens_per_source_token=0.5)
        return TransformersTranslator(self.qwen_dir, options)  # short translations keep the test quick

    def _load_finisher(self) -> Translator | None:
        return None  # the tiny decoder writes the finals too


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A streamst home: the tiny SenseVoice (with its ONNX export) beside links to the pulled VAD and Whisper."""
    try:
        pulled = {name: registry.model_path(name) for name in SHARED_MODELS}
    except ModelNotPulledError as e:
        pytest.skip(f"the end-to-end test uses the real VAD and Whisper: {e}")
    home = tmp_path_factory.mktemp("engine-home")
    for name, directory in pulled.items():
        (home / "models").mkdir(exist_ok=True)
        (home / "models" / name).symlink_to(directory, target_is_directory=True)
    model_dir = build_tiny_sensevoice(home / "models" / MODEL_NAME)
    export_onnx(model_dir)
    write_manifest(home / "manifests", model_dir)
    build_tiny_qwen(home / "tiny-qwen")
    return home


@pytest.fixture(scope="module")
def engine_for(home: Path):
    """Makes engines on the tiny home; the registry points there while this module's tests run."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STREAMST_HOME", str(home))
        patch.setenv("STREAMST_MANIFESTS", str(home / "manifests"))
        registry.verify(MODEL_NAME)

        def make(config: EngineConfig | None = None) -> Engine:
            return TinyTranslatorEngine(config or EngineConfig(), home / "tiny-qwen")

        yield make


@pytest.fixture(scope="module")
def engine(engine_for) -> Engine:
    """One engine shared by the sessions of this module, as a server shares it."""
    return engine_for()


def clip(fleurs: dict, clip_id: str) -> np.ndarray:
    return decode_audio(fleurs[clip_id]["path"])[: int(CLIP_S * 16_000)]


def run(session, audio: np.ndarray) -> list:
    events, n = [], 16 * CHUNK_MS
    for start in range(0, len(audio), n):
        session.clock.advance(CHUNK_MS)
        events += session.push(audio[start : start + n])
    return events + session.finish()


def check_events(events: list, mode: str, audio_ms: int) -> None:
    """Events arrive, finals close segments in the mode asked for, committed text only grows."""
    finals = [e for e in events if isinstance(e, FinalEvent)]
    assert finals, "the speech produced no final"
    assert all(e.mode == mode and not e.fallback_reason for e in finals), [(e.mode, e.fallback_reason) for e in finals]
    assert any(e.source_text for e in finals), "SenseVoice produced no source text"
    assert any(e.committed_text for e in finals), "the translator committed nothing"
    shown: dict[int, str] = {}
    for e in events:
        assert isinstance(e, PartialEvent | FinalEvent)
        assert e.committed_text.startswith(shown.get(e.segment_id, ""))
        assert e.committed_text == shown.get(e.segment_id, "") + e.committed_delta
        assert 0 <= e.start_ms <= e.end_ms <= audio_ms + 100
        shown[e.segment_id] = e.committed_text


def test_sensevoice_is_chosen_for_its_languages_once_pulled(engine, engine_for) -> None:
    assert registry.pull_state(MODEL_NAME) == "pulled"
    assert engine.components_for(resolve("zh")).encoder.name == "sensevoice"
    assert engine.components_for(resolve("yue")).encoder.name == "sensevoice"
    assert engine.components_for(resolve("de")).encoder.name == "whisper"
    assert engine.session("en", "de", mode="direct").components.encoder.name == "sensevoice"
    assert engine.session("fr", "en").components.encoder.name == "whisper"
    off = engine_for(EngineConfig(sensevoice_model=""))
    assert off.components_for(resolve("zh")).encoder.name == "whisper"


def test_a_sensevoice_that_cannot_load_leaves_whisper_in_charge(engine_for, caplog: pytest.LogCaptureFixture) -> None:
    engine = engine_for(EngineConfig(sensevoice=SenseVoiceOptions(backend="onnx", onnx_file="missing.onnx")))
    assert engine.components_for(resolve("zh")).encoder.name == "whisper"
    assert "sensevoice-small is pulled but cannot be loaded" in caplog.text


@pytest.mark.parametrize("policy", ["wait-k", "la", "confidence"])
def test_direct_mode_end_to_end(engine, fleurs: dict, policy: str) -> None:
    audio = clip(fleurs, "fleurs-en-004")
    options = session_options("direct", policy, step_ms=500)
    session = engine.session("en", "de", mode="direct", clock=SimulatedClock(), options=options)
    assert session.components.encoder.runner.name == "onnx"
    check_events(run(session, audio), "direct", len(audio) // 16)


def test_cascade_mode_end_to_end_on_the_torch_backend(engine_for, fleurs: dict) -> None:
    engine = engine_for(EngineConfig(sensevoice=SenseVoiceOptions(backend="torch")))
    audio = clip(fleurs, "fleurs-zh-1883")
    session = engine.session("zh", "en", mode="cascade", clock=SimulatedClock(), options=CascadeOptions(step_ms=500))
    assert session.components.encoder.runner.name == "torch"
    check_events(run(session, audio), "cascade", len(audio) // 16)
