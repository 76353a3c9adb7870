"""The translator alone: BLEU, chrF and decoding speed on a parallel text set.

Every sentence goes through ``translator.translate(source, src, tgt)`` as the cascade sends
a complete sentence; quality is scored with the target's sacrebleu tokenizer, speed as
generated tokens per second of translate() time (prefill included).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from streamst.benchmarks.datasets import Pair, TextPair
from streamst.benchmarks.scoring import QualityScores, quality_scores

from streamst.translators.base import Translator

log = logging.getLogger("streamst.benchmarks.mt")


@dataclass(frozen=True)
class MTScores:
    """Quality and speed of the translator on one pair of one text set."""

    dataset: str  # "flores200-devtest" or "wmt22"
    pair: str  # "en-zh"
    n_sentences: int
    quality: QualityScores
    n_generated_tokens: int  # target tokens decoded, over all sentences
    n_prefill_tokens: int  # prompt tokens evaluated (the rest came from the KV cache)
    translate_s: float  # total time in translate()
    n_unfinished: int  # translations cut by the token cap rather than ended by the model
    label: str = ""  # the name a report gives the folder it came from (`report --label`)

    @property
    def tokens_per_s(self) -> float:
        return self.n_generated_tokens / self.translate_s if self.translate_s > 0 else 0.0

    @property
    def mean_sentence_s(self) -> float:
        return self.translate_s / self.n_sentences if self.n_sentences else 0.0


@dataclass(frozen=True)
class MTOutput:
    scores: MTScores
    hypotheses: tuple[str, ...]


def translate_corpus(
    translator: Translator,
    dataset: str,
    pair: Pair,
    sentences: Sequence[TextPair],
    on_sentence: Callable[[], None] | None = None,
    examples: Sequence[tuple[str, str]] = (),
    n_context: int = 0,
) -> MTOutput:
    """Translate every sentence of ``sentences`` in order and score the result. The translator
    sees ``examples`` (source, translation) as earlier exchanges, then the ``n_context``
    sentences before each one with their translations, as a talk's earlier sentences."""
    hypotheses: list[str] = []
    n_generated = n_prefill = n_unfinished = 0
    translate_s = 0.0
    for i, sentence in enumerate(sentences):
        before = sentences[max(0, i - n_context) : i]
        earlier = tuple(examples) + tuple(zip([s.source for s in before], hypotheses[len(hypotheses) - len(before) :]))
        started_s = time.perf_counter()
        translation = translator.translate(sentence.source, pair.source, pair.target, earlier=earlier)
        translate_s += time.perf_counter() - started_s
        hypotheses.append(translation.text.strip())
        n_generated += len(translation.tokens)
        n_prefill += translation.n_prefill_tokens
        n_unfinished += not translation.finished
        if on_sentence is not None:
            on_sentence()
    quality = quality_scores(
        hypotheses, [s.reference for s in sentences], pair.target, [s.source for s in sentences]
    )
    log.info(
        "%s %s: BLEU %.1f chrF %.1f on %d sentences", dataset, pair.name, quality.bleu, quality.chrf, len(sentences)
    )
    scores = MTScores(dataset, pair.name, len(sentences), quality, n_generated, n_prefill, translate_s, n_unfinished)
    return MTOutput(scores, tuple(hypotheses))
