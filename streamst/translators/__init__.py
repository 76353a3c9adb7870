"""Translators: source text (+ committed target prefix) → target tokens with log-probs."""

from streamst.translators.base import Translator
from streamst.translators.greedy import DecoderBackend, GreedyTranslator

__all__ = ["DecoderBackend", "GreedyTranslator", "Translator"]
