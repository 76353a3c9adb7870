"""Errors a user can act on. Each message says what was wrong and how to fix it."""

from __future__ import annotations


class StreamstError(Exception):
    """Base of every error streamst raises on purpose; the CLIs print it as one line."""

    exit_code = 2


class AudioError(StreamstError):
    """A file is missing, cannot be decoded, or holds no audio."""


class LanguageError(StreamstError):
    """A language code or name is unknown, or a model cannot serve it."""


class ModelError(StreamstError):
    """A model is missing, not pulled yet, corrupt, or cannot be loaded."""


class ModelNotPulledError(ModelError):
    """A model's files are not in the cache; the message names the command that fetches them."""


class SourceUnavailableError(ModelError):
    """A model source (hub, PyPI parts) cannot be reached or does not hold the files."""


class OptionsError(StreamstError):
    """An option has a value outside its valid range or choices."""


class UnknownModeError(OptionsError):
    """A mode that does not exist; the message lists the modes."""


class UnknownPolicyError(OptionsError):
    """A policy the chosen mode does not have; the message lists its policies."""


class TranslatorUnavailableError(ModelError):
    """The translation server (`--translator-url`) cannot be reached, timed out or refused a request."""
