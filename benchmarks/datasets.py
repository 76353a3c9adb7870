"""Evaluation data: speech instances with reference translations, and parallel text.

A speech manifest is JSONL, one instance per line::

    {"id": "fleurs-en-000", "audio": "audio/fleurs-en-000.wav", "source_lang": "en",
     "duration_s": 8.9, "source_text": "...", "references": {"de": "...", "zh": "..."},
     "segments": [{"start_ms": 0, "end_ms": 8900, "source_text": "...", "references": {...}}]}

``audio`` is relative to the manifest; ``segments`` (the reference segments of a long-form
stream, with their offsets) is optional and defaults to one segment spanning the clip. The
FLEURS-mini manifest (``src_lang`` instead of ``source_lang``) reads as it is.

Loaders:
- :func:`load_fleurs_mini`: real read speech, FLORES references in 10 languages;
- :func:`build_long_form`: clips of one language concatenated with pauses, offsets kept;
- :func:`load_text_pairs`: FLORES-200 devtest or WMT22 text, for the translator alone;
- :func:`streamst.benchmarks.hub.load_hub`: FLEURS or CoVoST 2 through the ``datasets``
  library, for users online.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from streamst.audio import decode_audio
from streamst.errors import LanguageError, StreamstError
from streamst.languages import Language, resolve
from streamst.types import SAMPLES_PER_MS

log = logging.getLogger("streamst.benchmarks.datasets")

MS_PER_S = 1000
DATA_DIR_ENV = "STREAMST_BENCH_DATA"
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
"""``<repo>/../shared/data``; ``$STREAMST_BENCH_DATA`` or ``--data-dir`` overrides it."""

FLEURS_MINI = "fleurs-mini"
FLEURS_MINI_LONG = "fleurs-mini-long"
FLORES_DEVTEST = "flores200-devtest"
WMT22 = "wmt22"
HUB_FLEURS = "hub:google/fleurs"
HUB_COVOST2 = "hub:facebook/covost2"
SPEECH_DATASETS = (FLEURS_MINI, FLEURS_MINI_LONG, HUB_FLEURS, HUB_COVOST2)
TEXT_DATASETS = (FLORES_DEVTEST, WMT22)

MANIFEST_NAME = "manifest.jsonl"
WMT22_PAIRS = ("en-zh", "zh-en", "en-ja", "ja-en", "en-de", "de-en")


class DatasetError(StreamstError):
    """A dataset is missing, malformed, or holds nothing for the requested pair."""


# ---------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class ReferenceSegment:
    """One reference sentence (or sentences) of a speech instance, with its offsets."""

    start_ms: float  # where the segment starts in the instance's audio
    end_ms: float  # where it ends
    source_text: str  # what is said in it
    references: Mapping[str, str]  # target language code → reference translation

    @property
    def duration_ms(self) -> float:
        return self.end_ms - self.start_ms


@dataclass(frozen=True)
class SpeechInstance:
    """One stream to translate: a clip, or clips joined into a long-form stream."""

    id: str  # unique within the dataset; also names the audio
    source_lang: str  # language code of the speech, e.g. "en"
    duration_ms: float  # length of the audio
    source_text: str  # the transcript of the whole stream
    references: Mapping[str, str]  # target code → reference of the whole stream
    segments: tuple[ReferenceSegment, ...]  # reference segments, in time order
    audio_path: Path | None = None  # the audio file; None when `audio` holds the samples
    audio: np.ndarray | None = field(default=None, compare=False, repr=False)  # (n_samples,) 16 kHz

    def load_audio(self) -> np.ndarray:
        """(n_samples,) float32 mono at 16 kHz."""
        if self.audio is not None:
            return self.audio
        if self.audio_path is None:
            raise DatasetError(f"instance {self.id} has neither audio samples nor an audio path")
        return decode_audio(self.audio_path)

    @property
    def source_label(self) -> str:
        """What instance logs name as the source: the audio path, or the id for built audio."""
        return str(self.audio_path) if self.audio_path is not None else self.id


@dataclass(frozen=True)
class TextPair:
    """One sentence of a parallel text set."""

    index: int  # line number from 0
    source: str
    reference: str


# ---------------------------------------------------------------------------------------
# Data directory


def data_dir(override: str | Path | None = None) -> Path:
    """The evaluation data folder: ``override``, else ``$STREAMST_BENCH_DATA``, else
    ``<repo>/../shared/data``."""
    chosen = override or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(chosen)


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(
            f"{what} not found at {path}; pass --data-dir pointing at the folder that holds "
            f"{FLEURS_MINI}/, {FLORES_DEVTEST}/ and {WMT22}/ (or set ${DATA_DIR_ENV})"
        )
    return path


# ---------------------------------------------------------------------------------------
# Manifests


def _segment_from_json(record: Mapping[str, Any]) -> ReferenceSegment:
    return ReferenceSegment(
        start_ms=float(record["start_ms"]),
        end_ms=float(record["end_ms"]),
        source_text=record.get("source_text", ""),
        references=dict(record.get("references", {})),
    )


def instance_from_json(record: Mapping[str, Any], base_dir: Path) -> SpeechInstance:
    """One manifest line; ``audio`` is resolved against ``base_dir``."""
    duration_ms = float(record["duration_s"]) * MS_PER_S
    references = dict(record.get("references", {}))
    source_text = record.get("source_text", "")
    segments = tuple(_segment_from_json(s) for s in record.get("segments", ()))
    if not segments:
        segments = (ReferenceSegment(0.0, duration_ms, source_text, references),)
    source_lang = record.get("source_lang") or record["src_lang"]
    return SpeechInstance(
        id=str(record["id"]),
        source_lang=source_lang,
        duration_ms=duration_ms,
        source_text=source_text,
        references=references,
        segments=segments,
        audio_path=base_dir / record["audio"],
    )


def instance_to_json(instance: SpeechInstance, base_dir: Path) -> dict[str, Any]:
    """The manifest line of ``instance``, its audio path relative to ``base_dir`` if inside it."""
    if instance.audio_path is None:
        raise DatasetError(f"instance {instance.id} has no audio file; write its audio first")
    try:
        audio = instance.audio_path.relative_to(base_dir)
    except ValueError:
        audio = instance.audio_path
    return {
        "id": instance.id,
        "audio": str(audio),
        "source_lang": instance.source_lang,
        "duration_s": instance.duration_ms / MS_PER_S,
        "source_text": instance.source_text,
        "references": dict(instance.references),
        "segments": [
            {
                "start_ms": s.start_ms,
                "end_ms": s.end_ms,
                "source_text": s.source_text,
                "references": dict(s.references),
            }
            for s in instance.segments
        ],
    }


def read_manifest(path: str | Path) -> list[SpeechInstance]:
    """Every instance of a JSONL manifest, in file order."""
    path = _require(Path(path), "manifest")
    instances = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                instances.append(instance_from_json(json.loads(line), path.parent))
            except (KeyError, ValueError, TypeError) as e:
                raise DatasetError(
                    f"{path}:{line_number}: not a speech manifest line ({e!r}); each line needs "
                    "id, audio, source_lang, duration_s, source_text and references"
                ) from e
    return instances


def write_manifest(path: str | Path, instances: Iterable[SpeechInstance]) -> int:
    """Write ``instances`` as JSONL; returns how many were written."""
    path = Path(path)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for instance in instances:
            f.write(json.dumps(instance_to_json(instance, path.parent), ensure_ascii=False) + "\n")
            n += 1
    return n


def load_fleurs_mini(root: str | Path | None = None) -> list[SpeechInstance]:
    """The 45 FLEURS-mini clips (en, de, fr, es, zh, ja) in manifest order."""
    folder = _require(data_dir(root) / FLEURS_MINI, "FLEURS-mini")
    return read_manifest(folder / MANIFEST_NAME)


# ---------------------------------------------------------------------------------------
# Pairs


@dataclass(frozen=True)
class Pair:
    """A translation direction, as the user typed it and as languages."""

    source: Language
    target: Language

    @property
    def name(self) -> str:
        return f"{self.source.code}-{self.target.code}"


def parse_pairs(text: str) -> list[Pair]:
    """``"en-zh,de-en"`` → pairs; raises DatasetError naming the bad item."""
    pairs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        source, sep, target = item.partition("-")
        if not sep or not source or not target:
            raise DatasetError(f"pair {item!r} is not SOURCE-TARGET; write pairs like en-zh,de-en")
        if target.lower() in ("hant", "hans") or target.lower().startswith(("hant-", "hans-")):
            raise DatasetError(f"pair {item!r} is ambiguous; write Traditional Chinese as zh_Hant")
        try:
            pair = Pair(resolve(source), resolve(target.replace("_", "-")))
        except LanguageError as e:
            raise DatasetError(f"unknown pair {item!r}: {e}") from e
        if pair.source == pair.target:
            raise DatasetError(f"pair {item!r} translates a language into itself; choose another target")
        pairs.append(pair)
    if not pairs:
        raise DatasetError(f"no pairs in {text!r}; write pairs like en-zh,de-en")
    return pairs


def _language_code(instance_lang: str) -> str:
    return resolve(instance_lang).code


def select(instances: Sequence[SpeechInstance], pair: Pair, limit: int | None = None) -> list[SpeechInstance]:
    """Instances spoken in the pair's source with a reference in its target, at most ``limit``.

    Raises DatasetError when there are none, naming the pairs the data does hold.
    """
    chosen = [
        instance
        for instance in instances
        if _language_code(instance.source_lang) == pair.source.code and pair.target.code in instance.references
    ]
    if not chosen:
        raise DatasetError(
            f"unknown pair {pair.name} for this dataset: no instance is spoken in "
            f"{pair.source.name} with a {pair.target.name} reference; it holds "
            f"{', '.join(available_pairs(instances)) or 'nothing'}"
        )
    return chosen[:limit] if limit is not None else chosen


def available_pairs(instances: Sequence[SpeechInstance]) -> list[str]:
    """``"src-tgt"`` for every direction the instances can be scored in, sorted."""
    pairs = {
        f"{_language_code(i.source_lang)}-{target}"
        for i in instances
        for target in i.references
        if target != _language_code(i.source_lang)
    }
    return sorted(pairs)


# ---------------------------------------------------------------------------------------
# Long-form streams


@dataclass(frozen=True)
class LongFormOptions:
    min_pause_ms: int = 400  # shortest pause inserted between two clips
    max_pause_ms: int = 1_500  # longest pause inserted between two clips
    max_duration_ms: int = 120_000  # a stream stops taking clips once they add up to this long
    seed: int = 0  # seeds the pause lengths, so a build is repeatable

    def __post_init__(self) -> None:
        if not 0 <= self.min_pause_ms <= self.max_pause_ms:
            raise DatasetError(
                f"pauses must satisfy 0 <= min_pause_ms <= max_pause_ms, "
                f"got {self.min_pause_ms} and {self.max_pause_ms}"
            )
        if self.max_duration_ms <= 0:
            raise DatasetError(f"max_duration_ms must be positive, got {self.max_duration_ms}")


def build_long_form(
    instances: Sequence[SpeechInstance], options: LongFormOptions = LongFormOptions()
) -> list[SpeechInstance]:
    """Concatenate the clips of each source language, in order, with silent pauses between.

    Every clip becomes one reference segment at its offset in the stream; a stream takes
    no more clips once its clips add up to ``max_duration_ms`` (pauses not counted). Pause
    lengths are drawn uniformly (in whole ms) from a generator seeded with ``options.seed``.
    """
    rng = random.Random(options.seed)
    by_language: dict[str, list[SpeechInstance]] = {}
    for instance in instances:
        by_language.setdefault(instance.source_lang, []).append(instance)
    streams = []
    for lang, clips in by_language.items():
        for group in _groups_by_duration(clips, options):
            streams.append(_join(f"long-{lang}-{len(streams):03d}", lang, group, rng, options))
    return streams


def _groups_by_duration(clips: Sequence[SpeechInstance], options: LongFormOptions) -> list[list[SpeechInstance]]:
    groups: list[list[SpeechInstance]] = [[]]
    total_ms = 0.0
    for clip in clips:
        if groups[-1] and total_ms >= options.max_duration_ms:
            groups.append([])
            total_ms = 0.0
        groups[-1].append(clip)
        total_ms += clip.duration_ms
    return groups


def _join(
    stream_id: str,
    lang: str,
    clips: Sequence[SpeechInstance],
    rng: random.Random,
    options: LongFormOptions,
) -> SpeechInstance:
    pieces: list[np.ndarray] = []
    segments: list[ReferenceSegment] = []
    offset_samples = 0
    for i, clip in enumerate(clips):
        if i:
            pause_ms = rng.randint(options.min_pause_ms, options.max_pause_ms)
            pieces.append(np.zeros(pause_ms * SAMPLES_PER_MS, dtype=np.float32))
            offset_samples += pause_ms * SAMPLES_PER_MS
        audio = clip.load_audio()
        start_ms = offset_samples / SAMPLES_PER_MS
        pieces.append(audio)
        offset_samples += len(audio)
        for segment in clip.segments:
            segments.append(replace(segment, start_ms=start_ms + segment.start_ms, end_ms=start_ms + segment.end_ms))
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    targets = set.intersection(*(set(c.references) for c in clips)) if clips else set()
    return SpeechInstance(
        id=stream_id,
        source_lang=lang,
        duration_ms=len(audio) / SAMPLES_PER_MS,
        source_text=_join_texts((c.source_text for c in clips), lang),
        references={t: _join_texts((c.references[t] for c in clips), t) for t in sorted(targets)},
        segments=tuple(segments),
        audio=audio,
    )


def _join_texts(texts: Iterable[str], lang: str) -> str:
    separator = "" if resolve(lang).latency_unit == "char" else " "
    return separator.join(t.strip() for t in texts)


# ---------------------------------------------------------------------------------------
# Text sets


def load_text_pairs(
    dataset: str, pair: Pair, limit: int | None = None, root: str | Path | None = None
) -> list[TextPair]:
    """Parallel sentences of ``dataset`` (``flores200-devtest`` or ``wmt22``) for ``pair``."""
    if dataset == FLORES_DEVTEST:
        sources, references = _flores_lines(pair, root)
    elif dataset == WMT22:
        sources, references = _wmt22_lines(pair, root)
    else:
        raise DatasetError(f"unknown text dataset {dataset!r}; choose one of: {', '.join(TEXT_DATASETS)}")
    if len(sources) != len(references):
        raise DatasetError(f"{dataset} {pair.name}: {len(sources)} source lines but {len(references)} references")
    pairs = [TextPair(i, s, r) for i, (s, r) in enumerate(zip(sources, references, strict=True))]
    return pairs[:limit] if limit is not None else pairs


EXAMPLE_SOURCE_CHARS = (60, 200)  # few-shot examples: whole sentences, neither fragments nor paragraphs


def few_shot_examples(pair: Pair, n: int, root: str | Path | None = None) -> tuple[tuple[str, str], ...]:
    """``n`` (source, reference) pairs for a prompt's examples: the first WMT22 lines of
    ``pair`` whose source has 60 to 200 characters (WMT22 is not an evaluation set here)."""
    if n == 0:
        return ()
    lines = load_text_pairs(WMT22, pair, root=root)
    low, high = EXAMPLE_SOURCE_CHARS
    chosen = [(t.source, t.reference) for t in lines if low <= len(t.source) <= high and t.reference.strip()][:n]
    if len(chosen) < n:
        raise DatasetError(f"{WMT22} {pair.name} has only {len(chosen)} example sentences of {low}-{high} characters")
    return tuple(chosen)


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").rstrip("\n").split("\n")


def _flores_lines(pair: Pair, root: str | Path | None) -> tuple[list[str], list[str]]:
    folder = _require(data_dir(root) / FLORES_DEVTEST, "FLORES-200 devtest")
    paths = []
    for lang in (pair.source, pair.target):
        path = folder / f"{lang.flores_code}.devtest"
        if not path.exists():
            have = sorted(p.stem for p in folder.glob("*.devtest"))
            raise DatasetError(
                f"unknown pair {pair.name} for {FLORES_DEVTEST}: no {lang.name} file "
                f"({lang.flores_code}.devtest); it holds {', '.join(have)}"
            )
        paths.append(path)
    return _read_lines(paths[0]), _read_lines(paths[1])


def _wmt22_lines(pair: Pair, root: str | Path | None) -> tuple[list[str], list[str]]:
    folder = _require(data_dir(root) / WMT22, "WMT22")
    if pair.name not in WMT22_PAIRS:
        raise DatasetError(f"unknown pair {pair.name} for {WMT22}; it holds {', '.join(WMT22_PAIRS)}")
    return _read_lines(folder / f"{pair.name}.src"), _read_lines(folder / f"{pair.name}.ref")


# ---------------------------------------------------------------------------------------
# One entry point for the CLI


def load_speech(
    dataset: str, pairs: Sequence[Pair], limit: int | None = None, root: str | Path | None = None
) -> dict[str, list[SpeechInstance]]:
    """Instances per pair name for a speech dataset; raises DatasetError for an unknown pair."""
    if dataset not in SPEECH_DATASETS:
        raise DatasetError(f"unknown speech dataset {dataset!r}; choose one of: {', '.join(SPEECH_DATASETS)}")
    if dataset in (HUB_FLEURS, HUB_COVOST2):
        from streamst.benchmarks.hub import load_hub

        return {pair.name: load_hub(dataset, pair, limit=limit) for pair in pairs}
    clips = load_fleurs_mini(root)
    selected = {pair.name: select(clips, pair) for pair in pairs}
    if dataset == FLEURS_MINI_LONG:
        selected = {name: build_long_form(chosen) for name, chosen in selected.items()}
    return {name: chosen[:limit] if limit is not None else chosen for name, chosen in selected.items()}
