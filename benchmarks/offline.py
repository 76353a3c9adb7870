"""The offline reference of the same models: the whole utterance transcribed, then translated.

Audio up to Whisper's 30 s window is transcribed in one go; longer audio is cut into windows
of at most 30 s at the middle of VAD silences (at 30 s where speech never pauses), each
window prompted with the text of the one before. The words are split into sentences and
each sentence is translated, as the cascade translates them. Every unit counts as committed
once the whole source was heard (delay = source length), after all the compute.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass

import numpy as np
from streamst.benchmarks.datasets import Pair, SpeechInstance
from streamst.benchmarks.scoring import CallRecord, OutputSegment, StreamOutput, TimedUnit

from streamst import metrics
from streamst.punctuation import split_sentences
from streamst.sessions.base import Components
from streamst.types import SAMPLES_PER_MS, Word
from streamst.vad import Endpointer, SegmentClosed, VADOptions

log = logging.getLogger("streamst.benchmarks.offline")

MS_PER_S = 1000
MAX_WINDOW_MS = 30 * MS_PER_S  # Whisper's encoder window


@dataclass(frozen=True)
class Window:
    start_ms: int
    end_ms: int


def speech_gaps(components: Components, audio: np.ndarray) -> list[tuple[int, int]]:
    """Silences between VAD speech spans, as (start_ms, end_ms)."""
    endpointer = Endpointer(VADOptions())
    changes = endpointer.feed(components.vad.stream().probabilities(audio))
    changes += endpointer.flush()
    spans = [c.span for c in changes if isinstance(c, SegmentClosed)]
    return [(a.end_ms, b.start_ms) for a, b in itertools.pairwise(spans) if b.start_ms > a.end_ms]


def plan_windows(duration_ms: int, gaps: list[tuple[int, int]], max_window_ms: int = MAX_WINDOW_MS) -> list[Window]:
    """Windows of at most ``max_window_ms`` covering ``[0, duration_ms)``, cut at the middle
    of the latest gap that keeps a window within the limit, else at the limit."""
    cuts = [(start + end) // 2 for start, end in gaps]
    windows = []
    start_ms = 0
    while duration_ms - start_ms > max_window_ms:
        limit_ms = start_ms + max_window_ms
        candidates = [cut for cut in cuts if start_ms < cut <= limit_ms]
        end_ms = max(candidates) if candidates else limit_ms
        windows.append(Window(start_ms, end_ms))
        start_ms = end_ms
    windows.append(Window(start_ms, duration_ms))
    return windows


def transcribe_whole(components: Components, audio: np.ndarray, pair: Pair) -> list[Word]:
    duration_ms = len(audio) // SAMPLES_PER_MS
    gaps = speech_gaps(components, audio) if duration_ms > MAX_WINDOW_MS else []
    words: list[Word] = []
    prompt = ""
    for window in plan_windows(duration_ms, gaps):
        piece = audio[window.start_ms * SAMPLES_PER_MS : window.end_ms * SAMPLES_PER_MS]
        transcript = components.encoder.transcribe(piece, pair.source.whisper_code, window.start_ms, prompt, final=True)
        words += components.punctuator.punctuate(transcript.words, pair.source.code)
        prompt = transcript.text
    return words


def offline_instance(components: Components, instance: SpeechInstance, pair: Pair) -> StreamOutput:
    """Transcribe the whole of ``instance``, translate it sentence by sentence."""
    audio = instance.load_audio()
    audio_ms = len(audio) / SAMPLES_PER_MS
    started_s = time.perf_counter()
    sentences = split_sentences(transcribe_whole(components, audio, pair))
    translator = components.final_translator  # whole sentences: what finals translate
    translations = [translator.translate(s.text, pair.source, pair.target).text.strip() for s in sentences]
    compute_ms = (time.perf_counter() - started_s) * MS_PER_S
    segments = []
    all_units: list[str] = []
    for sentence, translation in zip(sentences, translations, strict=True):
        texts = metrics.units(translation, pair.target.code)
        all_units += texts
        units = tuple(TimedUnit(text, audio_ms, audio_ms + compute_ms) for text in texts)
        if units:
            segments.append(OutputSegment(units, sentence.start_ms, sentence.end_ms, sentence.text))
    log.debug("offline %s: %d sentence(s) in %.0f ms", instance.id, len(sentences), compute_ms)
    return StreamOutput(
        instance.id,
        tuple(segments),
        (tuple(all_units),),
        compute_ms,
        audio_ms,
        (CallRecord(audio_ms, compute_ms),),
        wall_clock=False,
    )
