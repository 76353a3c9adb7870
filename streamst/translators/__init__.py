"""Translators: source text (+ committed target prefix) → target tokens with log-probs."""

from streamst.translators.base import Translator

__all__ = ["Translator"]
