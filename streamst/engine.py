"""The engine: loads the shared models once and opens one session per stream.

    engine = Engine()
    session = engine.session(source="en", target="zh", mode="cascade")
    events = session.push(pcm)   # (n_samples,) float32 at 16 kHz
    events += session.finish()
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from streamst import registry
from streamst.clock import Clock
from streamst.cores import default_threads
from streamst.encoders.base import SpeechEncoder
from streamst.encoders.sensevoice import SenseVoiceOptions, load_sensevoice
from streamst.encoders.whisper import WhisperEncoder, WhisperOptions
from streamst.errors import LanguageError, ModelError, OptionsError
from streamst.languages import Language, resolve
from streamst.options import DEFAULT_MODE, mode_spec
from streamst.presets import DEFAULT_QUALITY, QUALITY_PRESETS
from streamst.punctuation import PassThroughPunctuator
from streamst.sessions.base import Components, SegmentedSession, SessionOptions
from streamst.sessions.cascade import CascadeOptions, CascadeSession
from streamst.sessions.direct import DirectSession
from streamst.sessions.source import SourceSession
from streamst.translators.base import Translator
from streamst.translators.llama_cpp import LlamaCppTranslator, LlamaOptions
from streamst.translators.openai_server import OpenAIServerTranslator, ServerOptions
from streamst.vad import SileroVAD

log = logging.getLogger("streamst.engine")

SESSIONS: dict[str, type[SegmentedSession]] = {"direct": DirectSession, "cascade": CascadeSession}


@dataclass(frozen=True)
class EngineConfig:
    vad_model: str = "silero-vad"  # registry name of the VAD model
    encoder_model: str = "whisper-base"  # registry name of the speech encoder
    sensevoice_model: str = "sensevoice-small"  # serves zh/en/yue/ja/ko instead once pulled; "" = never
    translator_model: str = QUALITY_PRESETS[DEFAULT_QUALITY].steps  # registry name of the decoder that steps
    # The decoder that writes finals (streamst.presets); "" or translator_model: the one decoder does.
    finals_model: str = QUALITY_PRESETS[DEFAULT_QUALITY].finals
    translator_file: str = ""  # the GGUF inside translator_model; "" = the model's only .gguf file
    translator_backend: str = "llama.cpp"  # llama.cpp (GGUF, CPU) | transformers (torch, GPU)
    n_threads: int = field(default_factory=default_threads)  # threads of each model call (VAD: 1); see streamst.cores
    whisper: WhisperOptions = field(default_factory=WhisperOptions)
    llama: LlamaOptions = field(default_factory=LlamaOptions)
    sensevoice: SenseVoiceOptions = field(default_factory=SenseVoiceOptions)
    translator_server: ServerOptions | None = None  # set: the decoder runs on this completion server, not in-process

    @property
    def remote_translator(self) -> bool:
        """Whether the decoder runs on a completion server (its threads are not this process's)."""
        return self.translator_server is not None

    @property
    def separate_finals(self) -> bool:
        """Whether a second decoder writes finals (never with a completion server)."""
        return not self.remote_translator and self.finals_model not in ("", self.translator_model)

    @property
    def finals_decoder(self) -> str:
        """The registry name of the decoder that writes finals."""
        return self.finals_model if self.separate_finals else self.translator_model


class Engine:
    """Shared models, loaded lazily on first use (or all at once with `load()`); thread-safe."""

    def __init__(self, config: EngineConfig = EngineConfig()) -> None:
        if config.n_threads < 1:
            raise OptionsError(f"n_threads must be at least 1, got {config.n_threads}")
        self.config = config
        self._lock = threading.Lock()
        self._components: Components | None = None
        self._sensevoice: SpeechEncoder | None = None

    def load(self) -> Components:
        with self._lock:
            if self._components is None:
                self._components = Components(
                    vad=self._load_vad(),
                    encoder=self._load_encoder(),
                    punctuator=PassThroughPunctuator(),
                    translator=self._load_translator(),
                    finisher=self._load_finisher(),
                )
                self._sensevoice = self._load_sensevoice()
                self._prepare(self._components)
            return self._components

    def components_for(self, source: Language) -> Components:
        """The shared models for a stream of `source` speech: SenseVoice for its languages when it
        is pulled and loads, the configured encoder otherwise."""
        components = self.load()
        if self._sensevoice is not None and self._sensevoice.supports(source.whisper_code or ""):
            return replace(components, encoder=self._sensevoice)
        return components

    @property
    def loaded(self) -> bool:
        return self._components is not None

    def session(
        self,
        source: str,
        target: str,
        mode: str = DEFAULT_MODE,
        clock: Clock | None = None,
        options: SessionOptions | None = None,
    ) -> SegmentedSession:
        """A new stream from `source` speech to `target` text (language codes or names).
        `options` must match the mode (`streamst.options.session_options` builds them); None takes
        the mode's defaults."""
        source_language, target_language = self.check_pair(source, target)
        options_type = mode_spec(mode).options_type
        if options is not None and not isinstance(options, options_type):
            raise OptionsError(f"mode {mode!r} takes {options_type.__name__}, got {type(options).__name__}")
        components = self._hearing(source_language, source)
        return SESSIONS[mode](components, source_language, target_language, options or options_type(), clock)

    def source_session(
        self, source: str, options: CascadeOptions | None = None, clock: Clock | None = None
    ) -> SourceSession:
        """A stream of `source` speech heard but not translated: a room's source side, whose
        sentences `streamst.sessions.source.SentenceStream`s translate once per target language."""
        source_language = self.check_source(source)
        components = self._hearing(source_language, source)
        return SourceSession(components, source_language, options or CascadeOptions(), clock)

    def _hearing(self, source_language: Language, source: str) -> Components:
        """The components for a stream of `source_language` speech; their encoder must hear it."""
        components = self.components_for(source_language)
        if not components.encoder.supports(source_language.whisper_code or ""):
            raise LanguageError(f"the speech encoder cannot transcribe {source_language.name} ({source})")
        return components

    @staticmethod
    def check_source(source: str) -> Language:
        """Resolves the spoken language; it must be one a speech encoder can hear."""
        return _hearable(resolve(source), source)

    @staticmethod
    def check_pair(source: str, target: str) -> tuple[Language, Language]:
        """Resolves both languages; the source must be one a speech encoder can hear."""
        source_language, target_language = resolve(source), resolve(target)
        _hearable(source_language, source)
        if source_language == target_language:
            raise LanguageError(f"source and target are both {source_language.name}; choose a different target")
        return source_language, target_language

    @staticmethod
    def _prepare(components: Components) -> None:
        """The decoders' one-off work of a first request, done at load rather than in the first
        sentence of the first stream (where it pushed a live stream past its compute budget)."""
        decoders = {id(t): t for t in (components.translator, components.final_translator)}
        started_s = time.perf_counter()
        for translator in decoders.values():
            translator.prepare()
        log.info("decoders prepared in %.1f s", time.perf_counter() - started_s)

    def _load_vad(self) -> SileroVAD:
        path = registry.model_file(self.config.vad_model, "silero_vad.onnx")
        with _pull_hint(self.config.vad_model):
            return SileroVAD(path)

    def _load_encoder(self) -> SpeechEncoder:
        name = self.config.encoder_model
        path: Path = registry.model_path(name)
        log.info("loading speech encoder %s from %s (%d threads)", name, path, self.config.n_threads)
        if registry.get_manifest(name).format == "sensevoice":
            return load_sensevoice(path, self.config.sensevoice, self.config.n_threads)
        with _pull_hint(name):
            return WhisperEncoder(path, self.config.whisper, self.config.n_threads)

    def _load_sensevoice(self) -> SpeechEncoder | None:
        name = self.config.sensevoice_model
        if not name or name == self.config.encoder_model or registry.pull_state(name) != "pulled":
            return None
        try:
            encoder = load_sensevoice(registry.model_path(name), self.config.sensevoice, self.config.n_threads)
        except ModelError as e:
            log.warning("%s is pulled but cannot be loaded (%s); %s serves every language", name, e,
                        self.config.encoder_model)
            return None
        log.info("loaded speech encoder %s for zh, en, yue, ja, ko", name)
        return encoder

    def _load_translator(self) -> Translator:
        if self.config.translator_server is not None:
            log.info("translating on the completion server at %s", self.config.translator_server.base_url)
            return OpenAIServerTranslator(self.config.translator_server)
        return self._load_decoder(self.config.translator_model, self.config.translator_file)

    def _load_finisher(self) -> Translator | None:
        if not self.config.separate_finals:
            return None
        log.info("finals are written by %s", self.config.finals_model)
        return self._load_decoder(self.config.finals_model)

    def _load_decoder(self, name: str, file: str = "") -> Translator:
        """A decoder in-process on the configured backend; `file`: the GGUF inside the model
        (default: its only .gguf)."""
        backend = self.config.translator_backend
        if backend not in TRANSLATOR_BACKENDS:
            raise OptionsError(f"unknown translator backend {backend!r}; choose one of: {', '.join(TRANSLATOR_BACKENDS)}")
        if backend == "transformers":
            from streamst.translators.transformers_backend import TransformersTranslator

            path = registry.model_path(name)
            log.info("loading translator %s (transformers) from %s", name, path)
            with _pull_hint(name):
                return TransformersTranslator(path)
        path = registry.model_file(name, file or _only_gguf(name))
        log.info("loading translator %s from %s (%d threads)", name, path, self.config.n_threads)
        with _pull_hint(name):
            return LlamaCppTranslator(path, self.config.llama, n_threads=self.config.n_threads)


TRANSLATOR_BACKENDS = ("llama.cpp", "transformers")


def gguf_path(model: str) -> Path:
    """The GGUF file of a pulled translator model (the only one it has)."""
    return registry.model_file(model, _only_gguf(model))


def _only_gguf(model: str) -> str:
    files = [f.path for f in registry.get_manifest(model).files if f.path.endswith(".gguf")]
    if len(files) != 1:
        raise OptionsError(
            f"model {model!r} has {len(files)} .gguf files ({', '.join(files) or 'none'}); "
            "the llama.cpp translator needs exactly one, or translator_file naming it"
        )
    return files[0]


@contextlib.contextmanager
def _pull_hint(model: str) -> Iterator[None]:
    """A model whose files are there but fail to load gets the command that fetches them again."""
    try:
        yield
    except ModelError as e:
        raise ModelError(f"{e}; to fetch it again run: streamst models pull {model}") from e


def _hearable(language: Language, given: str) -> Language:
    """`language` (named `given` by the caller), if a speech encoder can hear it."""
    if language.whisper_code is None:
        raise LanguageError(
            f"{language.name} ({given}) cannot be recognised from speech by the available encoders; "
            "choose a source language Whisper supports, such as en, zh, de, fr, es, ja"
        )
    return language
