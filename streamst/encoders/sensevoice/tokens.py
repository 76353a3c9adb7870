"""SenseVoice's vocabulary: the SentencePiece BPE model, its `<|tag|>` tokens and the query ids.

The encoder sees four query frames before the speech: a language query, two fixed queries
for the event and the emotion, and a text-normalisation query. Its CTC output starts with
the matching tags (`<|en|><|NEUTRAL|><|Speech|><|withitn|>`), then the text.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from streamst.encoders.sensevoice.layout import FIX
from streamst.errors import ModelError

BLANK_ID = 0
N_QUERY_FRAMES = 4  # language, event, emotion and text-normalisation queries precede the speech frames
EVENT_EMOTION_QUERY_IDS = (1, 2)
# Rows of the model's query embedding (FunASR `SenseVoiceSmall.lid_dict` / `textnorm_dict`).
LANGUAGE_QUERY_IDS = {"auto": 0, "zh": 3, "en": 4, "yue": 7, "ja": 11, "ko": 12, "nospeech": 13}
TEXTNORM_QUERY_IDS = {"withitn": 14, "woitn": 15}
N_QUERY_EMBEDDINGS = 16
SENSEVOICE_LANGUAGES = frozenset({"zh", "en", "yue", "ja", "ko"})

EMOTIONS = frozenset({"HAPPY", "SAD", "ANGRY", "NEUTRAL", "FEARFUL", "DISGUSTED", "SURPRISED", "EMO_UNKNOWN"})
ITN_TAGS = frozenset(TEXTNORM_QUERY_IDS)
NO_SPEECH = "nospeech"
EMO_UNKNOWN_PIECE = "<|EMO_UNKNOWN|>"
_TAG_RE = re.compile(r"^<\|([^|<>]+)\|>$")

TagKind = Literal["language", "emotion", "event", "itn"]


@dataclass(frozen=True)
class Tag:
    kind: TagKind
    value: str  # "en", "NEUTRAL", "Speech", "withitn"


def classify_tag(piece: str) -> Tag | None:
    """A `<|...|>` piece as a tag; None for ordinary text. Emotions are upper case, events
    capitalised (`Speech`, `BGM`, `Laughter`), languages lower case (`en`, `nospeech`)."""
    match = _TAG_RE.match(piece)
    if not match:
        return None
    value = match.group(1)
    if value in EMOTIONS:
        return Tag("emotion", value)
    if value in ITN_TAGS:
        return Tag("itn", value)
    if value[:1].isupper():
        return Tag("event", value)
    return Tag("language", value)


class Vocabulary:
    """The BPE model: id → piece, ids → text, and which ids are tags. Thread-safe."""

    def __init__(self, bpe_path: Path) -> None:
        try:
            import sentencepiece as spm
        except ImportError as e:
            raise ModelError("SenseVoice decoding needs sentencepiece: pip install sentencepiece") from e
        processor = spm.SentencePieceProcessor()
        try:
            processor.Load(str(bpe_path))
        except (OSError, RuntimeError) as e:
            raise ModelError(f"{bpe_path} is not a SentencePiece model ({e}); {FIX}") from e
        self.path = bpe_path
        self._sp = processor
        self._lock = threading.Lock()
        self.size = processor.GetPieceSize()
        self._pieces = tuple(processor.IdToPiece(i) for i in range(self.size))
        self.tags = {i: tag for i, piece in enumerate(self._pieces) if (tag := classify_tag(piece)) is not None}
        self._ids = {piece: i for i, piece in enumerate(self._pieces)}

    def piece(self, token_id: int) -> str:
        return self._pieces[token_id]

    def id_of(self, piece: str) -> int | None:
        return self._ids.get(piece)

    def decode(self, token_ids: list[int]) -> str:
        with self._lock:
            return self._sp.DecodeIds(token_ids)
