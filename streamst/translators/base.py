"""The translator interface every MT backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from streamst.languages import Language
from streamst.types import Translation


class Translator(ABC):
    """Translates text, or continues a translation whose start is already committed.

    Shared by all sessions; implementations serialise access to their model themselves."""

    name: str = "translator"

    @abstractmethod
    def translate(
        self,
        source_text: str,
        source: Language,
        target: Language,
        committed: str = "",
        max_new_tokens: int | None = None,
        stream_key: object | None = None,
        earlier: Sequence[tuple[str, str]] = (),
    ) -> Translation:
        """Greedy translation of `source_text`, continuing after `committed` (target text already
        shown to the listener, never re-translated). `Translation.text` excludes `committed`.
        `max_new_tokens=None` lets the backend choose a cap from the source length.
        `stream_key` names the stream asking; pass a small hashable id (an int unique per session),
        not the session: the translator remembers the last key until the next request (weakly, when
        the key is an object that allows it) and compares keys with `==`. A backend may reuse work
        from that stream's previous request (its source usually just grew); requests without a key
        never depend on others.
        `earlier`: (source, translation) exchanges shown to the model before this one, oldest
        first: the sentences said before in the same talk, so its names and terms keep their
        translation. They are context only; the result translates `source_text` alone."""

    def prepare(self) -> None:
        """Does the one-off work of a first request now (reading the weights in, building masks),
        before any stream asks; called once when the engine loads. Nothing to do by default."""

    def check_reachable(self) -> None:
        """Raises `TranslatorUnavailableError` when the translator cannot serve a request now (a
        decoder on another server that does not answer); one in this process always can."""
