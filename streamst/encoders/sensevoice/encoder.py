"""The SenseVoice `SpeechEncoder`: one forward pass per window, CTC greedy decoding, timed words.

Being non-autoregressive, a step on the growing window of the open segment costs one encoder
pass whatever the text; there is no decoder to loop, so no repeat or rate guards are needed
(a CTC head emits at most one token per 60 ms output frame).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from streamst.cores import SPEECH_CALLS
from streamst.encoders.base import SpeechEncoder
from streamst.encoders.sensevoice.ctc import decode
from streamst.encoders.sensevoice.frontend import Frontend, load_cmvn
from streamst.encoders.sensevoice.layout import (
    FIX,
    ONNX_NAME,
    SenseVoiceConfig,
    SenseVoiceFiles,
    find_files,
    read_config,
)
from streamst.encoders.sensevoice.tokens import (
    EMO_UNKNOWN_PIECE,
    LANGUAGE_QUERY_IDS,
    NO_SPEECH,
    SENSEVOICE_LANGUAGES,
    TEXTNORM_QUERY_IDS,
    Tag,
    Vocabulary,
)
from streamst.errors import ModelError, OptionsError
from streamst.profiling import locked
from streamst.types import SAMPLE_RATE_HZ, Transcript, Word

log = logging.getLogger("streamst.encoders.sensevoice")

BACKENDS = ("auto", "onnx", "torch")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class SenseVoiceOptions:
    backend: str = "auto"  # "onnx" (onnxruntime), "torch" (FunASR on PyTorch); "auto": onnx when `onnx_file` exists
    onnx_file: str = ONNX_NAME  # the ONNX file in the model directory ("model_quant.onnx" for int8)
    device: str = "auto"  # "cpu", "cuda", or "auto": CUDA when the backend can use a GPU
    use_itn: bool = True  # inverse text normalisation: punctuation, casing and digits in the output
    dither: float = 0.0  # fbank dither; FunASR's default 1.0 makes each re-run of a window differ
    ban_emo_unk: bool = False  # never emit the unknown-emotion tag (FunASR's `ban_emo_unk`)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise OptionsError(f"unknown SenseVoice backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.device not in DEVICES:
            raise OptionsError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if self.dither < 0:
            raise OptionsError(f"dither must not be negative, got {self.dither}")


@dataclass(frozen=True)
class SenseVoiceResult:
    """A window's transcript plus the tags SenseVoice put in front of it."""

    transcript: Transcript
    language: str  # the language tag it emitted ("en", "nospeech"); "" when none
    emotion: str  # e.g. "NEUTRAL", "HAPPY", "EMO_UNKNOWN"; "" when none
    events: tuple[str, ...]  # e.g. ("Speech",), ("BGM", "Laughter")
    itn: bool | None  # whether the text is normalised (punctuation, digits), per its tag; None when untagged


class CtcRunner(Protocol):
    """A backend: encoder features → CTC log-probabilities."""

    name: str
    vocab_size: int | None

    def log_probs(self, features: np.ndarray, language_id: int, textnorm_id: int) -> np.ndarray:
        """features: (n_frames, feature_dim) → (4 + n_frames, vocab_size) float32."""
        ...


class SenseVoiceEncoder(SpeechEncoder):
    """SenseVoiceSmall on one backend; shared by all sessions, safe to call from threads."""

    name = "sensevoice"

    def __init__(
        self,
        runner: CtcRunner,
        frontend: Frontend,
        vocabulary: Vocabulary,
        options: SenseVoiceOptions = SenseVoiceOptions(),
    ) -> None:
        if runner.vocab_size is not None and runner.vocab_size != vocabulary.size:
            raise ModelError(
                f"the {runner.name} model has {runner.vocab_size} outputs but {vocabulary.path.name} has "
                f"{vocabulary.size} pieces; the model and the BPE model must come from the same release ({FIX})"
            )
        self.runner = runner
        self.frontend = frontend
        self.vocabulary = vocabulary
        self.options = options
        emo_unknown = vocabulary.id_of(EMO_UNKNOWN_PIECE)
        self._banned = [emo_unknown] if options.ban_emo_unk and emo_unknown is not None else []

    def supports(self, language: str) -> bool:
        return language in SENSEVOICE_LANGUAGES

    def transcribe(
        self, audio: np.ndarray, language: str, window_start_ms: int, prompt: str = "", final: bool = False
    ) -> Transcript:
        """SenseVoice takes no text prompt; `prompt` is accepted for the interface and ignored."""
        return self.recognize(audio, language, window_start_ms).transcript

    def recognize(self, audio: np.ndarray, language: str, window_start_ms: int = 0) -> SenseVoiceResult:
        """audio: (n_samples,) float32 at 16 kHz starting at `window_start_ms` → words and tags."""
        if not self.supports(language):
            raise OptionsError(
                f"SenseVoice cannot transcribe {language!r}; it knows {', '.join(sorted(SENSEVOICE_LANGUAGES))}"
            )
        audio_ms = int(len(audio) * 1000 / SAMPLE_RATE_HZ)
        with locked(SPEECH_CALLS, "encoder.wait"):
            features = self.frontend.features(audio.astype(np.float32, copy=False))
            if len(features) == 0:
                return _result((), (), language, window_start_ms, audio_ms)
            textnorm = "withitn" if self.options.use_itn else "woitn"
            log_probs = self.runner.log_probs(features, LANGUAGE_QUERY_IDS[language], TEXTNORM_QUERY_IDS[textnorm])
        log_probs[:, self._banned] = -np.inf
        decoded = decode(log_probs, self.vocabulary, self.frontend.config.output_frame_ms, audio_ms)
        return _result(decoded.words, decoded.tags, language, window_start_ms, audio_ms)


def load_sensevoice(
    model_dir: Path | str, options: SenseVoiceOptions = SenseVoiceOptions(), n_threads: int = 2
) -> SenseVoiceEncoder:
    """A SenseVoice encoder from an official-layout directory on the backend `options` choose;
    `n_threads`: onnxruntime's intra-op threads on the CPU (the engine's share)."""
    if n_threads < 1:
        raise OptionsError(f"n_threads must be at least 1, got {n_threads}")
    files = find_files(model_dir)
    config = read_config(files.config)
    vocabulary = Vocabulary(files.bpe)
    frontend = Frontend(config.frontend, load_cmvn(files.cmvn), options.dither)
    runner = _runner(files, config, vocabulary, options, n_threads)
    log.info("SenseVoice from %s on the %s backend", files.directory, runner.name)
    return SenseVoiceEncoder(runner, frontend, vocabulary, options)


def _runner(
    files: SenseVoiceFiles, config: SenseVoiceConfig, vocabulary: Vocabulary, options: SenseVoiceOptions,
    n_threads: int,
) -> CtcRunner:
    onnx_path = files.onnx(options.onnx_file)
    backend = options.backend
    if backend == "auto":
        backend = "onnx" if onnx_path.is_file() else "torch"
    if backend == "onnx":
        from streamst.encoders.sensevoice.onnx_backend import OnnxRunner

        return OnnxRunner(onnx_path, options.device, n_threads)
    from streamst.encoders.sensevoice.torch_backend import TorchRunner, import_funasr_model, load_model, resolve_device

    if not files.has_checkpoint and options.backend == "auto":
        raise ModelError(
            f"SenseVoice directory {files.directory} has neither {options.onnx_file} nor {files.checkpoint.name}; {FIX}"
        )
    try:
        import_funasr_model()
    except ModelError as e:
        if options.backend == "auto":
            raise ModelError(
                f"{e}; or, without PyTorch, run an exported model: put {options.onnx_file} "
                f"(python -m streamst.encoders.sensevoice.export, on a machine with torch) in {files.directory}"
            ) from e
        raise
    device = resolve_device(options.device)
    return TorchRunner(load_model(files, config, vocabulary.size, device), device)


def _result(
    words: tuple[Word, ...], tags: tuple[Tag, ...], language: str, window_start_ms: int, audio_ms: int
) -> SenseVoiceResult:
    values = {kind: [t.value for t in tags if t.kind == kind] for kind in ("language", "emotion", "event", "itn")}
    detected = values["language"][0] if values["language"] else ""
    if detected == NO_SPEECH:
        words = ()
    shifted = tuple(
        Word(w.text, w.start_ms + window_start_ms, w.end_ms + window_start_ms, w.probability) for w in words
    )
    return SenseVoiceResult(
        transcript=Transcript(shifted, language, window_start_ms, window_start_ms + audio_ms),
        language=detected,
        emotion=values["emotion"][0] if values["emotion"] else "",
        events=tuple(dict.fromkeys(values["event"])),
        itn=(values["itn"][0] == "withitn") if values["itn"] else None,
    )
