"""Benchmark datasets: manifests, pairs, long-form streams, text sets, and their errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from streamst.benchmarks import datasets, hub
from streamst.benchmarks.datasets import (
    DatasetError,
    LongFormOptions,
    Pair,
    ReferenceSegment,
    SpeechInstance,
    build_long_form,
    load_fleurs_mini,
    load_speech,
    load_text_pairs,
    parse_pairs,
    read_manifest,
    select,
    write_manifest,
)

from streamst.languages import resolve
from streamst.types import SAMPLES_PER_MS

FLEURS_LINE = {
    "id": "fleurs-en-000",
    "src_lang": "en",
    "flores_lang": "eng_Latn",
    "audio": "audio/fleurs-en-000.wav",
    "duration_s": 10.56,
    "source_text": "Hello there.",
    "references": {"en": "Hello there.", "de": "Hallo.", "zh": "你好。"},
}


def pair(text: str) -> Pair:
    return parse_pairs(text)[0]


def clip(clip_id: str, lang: str, duration_ms: int, references: dict[str, str]) -> SpeechInstance:
    audio = np.full(duration_ms * SAMPLES_PER_MS, 0.1, dtype=np.float32)
    return SpeechInstance(
        id=clip_id,
        source_lang=lang,
        duration_ms=duration_ms,
        source_text=f"text of {clip_id}",
        references=references,
        segments=(ReferenceSegment(0, duration_ms, f"text of {clip_id}", references),),
        audio=audio,
    )


def write_fleurs(root: Path, lines: list[dict]) -> Path:
    folder = root / "fleurs-mini"
    folder.mkdir(parents=True)
    (folder / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return root


# ---------------------------------------------------------------------------------------
# Manifests


def test_fleurs_manifest_line_reads_as_one_segment(tmp_path: Path) -> None:
    root = write_fleurs(tmp_path, [FLEURS_LINE])
    (instance,) = load_fleurs_mini(root)
    assert instance.id == "fleurs-en-000"
    assert instance.source_lang == "en"
    assert instance.duration_ms == pytest.approx(10_560)
    assert instance.audio_path == root / "fleurs-mini" / "audio" / "fleurs-en-000.wav"
    assert instance.segments == (ReferenceSegment(0.0, 10_560.0, "Hello there.", FLEURS_LINE["references"]),)


def test_manifest_round_trip_keeps_segments(tmp_path: Path) -> None:
    segments = (
        ReferenceSegment(0.0, 4000.0, "One.", {"de": "Eins."}),
        ReferenceSegment(5000.0, 9000.0, "Two.", {"de": "Zwei."}),
    )
    instance = SpeechInstance(
        "long-en-000", "en", 9000.0, "One. Two.", {"de": "Eins. Zwei."}, segments, tmp_path / "a.wav"
    )
    path = tmp_path / "manifest.jsonl"
    assert write_manifest(path, [instance]) == 1
    assert json.loads(path.read_text(encoding="utf-8"))["audio"] == "a.wav"
    assert read_manifest(path) == [instance]


def test_malformed_manifest_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    path.write_text(json.dumps(FLEURS_LINE) + "\n" + json.dumps({"id": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"manifest.jsonl:2: .*source_lang"):
        read_manifest(path)


def test_missing_dataset_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="--data-dir"):
        load_fleurs_mini(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="FLORES-200 devtest not found"):
        load_text_pairs("flores200-devtest", pair("en-de"), root=tmp_path)


def test_data_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path))
    assert datasets.data_dir() == tmp_path
    assert datasets.data_dir(tmp_path / "x") == tmp_path / "x"


# ---------------------------------------------------------------------------------------
# Pairs


def test_parse_pairs() -> None:
    pairs = parse_pairs("en-zh, de-en,en-zh-Hant")
    assert [p.name for p in pairs] == ["en-zh", "de-en", "en-zh-Hant"]
    assert pairs[0].target == resolve("zh")


@pytest.mark.parametrize("text", ["en", "en-", "en-xx", "en-en", ","])
def test_bad_pairs_raise(text: str) -> None:
    with pytest.raises(DatasetError):
        parse_pairs(text)


def test_select_unknown_pair_lists_available_pairs() -> None:
    clips = [clip("a", "en", 1000, {"de": "A"}), clip("b", "de", 1000, {"en": "B"})]
    assert [c.id for c in select(clips, pair("en-de"))] == ["a"]
    with pytest.raises(DatasetError, match=r"unknown pair en-ja .* de-en, en-de"):
        select(clips, pair("en-ja"))


def test_select_respects_limit() -> None:
    clips = [clip(f"c{i}", "en", 1000, {"de": "x"}) for i in range(5)]
    assert [c.id for c in select(clips, pair("en-de"), limit=2)] == ["c0", "c1"]


# ---------------------------------------------------------------------------------------
# Long-form streams


def test_long_form_keeps_segment_offsets() -> None:
    clips = [
        clip("a", "en", 1000, {"de": "A.", "zh": "甲。"}),
        clip("b", "en", 2000, {"de": "B.", "zh": "乙。"}),
        clip("c", "en", 500, {"de": "C."}),
    ]
    options = LongFormOptions(min_pause_ms=300, max_pause_ms=900, seed=7)
    (stream,) = build_long_form(clips, options)
    starts = [s.start_ms for s in stream.segments]
    ends = [s.end_ms for s in stream.segments]
    pauses = [starts[i + 1] - ends[i] for i in range(2)]
    assert starts[0] == 0 and ends[0] == 1000
    assert all(300 <= p <= 900 for p in pauses)
    assert ends[1] - starts[1] == 2000 and ends[2] - starts[2] == 500
    assert stream.duration_ms == pytest.approx(ends[2]) == len(stream.audio) / SAMPLES_PER_MS
    # The clips' audio sits at the offsets, silence between them.
    first_pause = stream.audio[1000 * SAMPLES_PER_MS : int(starts[1]) * SAMPLES_PER_MS]
    assert not first_pause.any()
    assert stream.audio[int(starts[1]) * SAMPLES_PER_MS] == pytest.approx(0.1)
    # Only targets every clip has are kept for the whole stream.
    assert stream.references == {"de": "A. B. C."}
    assert [s.references["de"] for s in stream.segments] == ["A.", "B.", "C."]
    assert build_long_form(clips, options)[0].segments == stream.segments


def test_long_form_splits_by_language_and_duration() -> None:
    clips = [clip(f"en{i}", "en", 1000, {"de": "x"}) for i in range(5)] + [clip("zh0", "zh", 1000, {"en": "y"})]
    streams = build_long_form(clips, LongFormOptions(max_duration_ms=2500, max_pause_ms=500))
    assert [s.source_lang for s in streams] == ["en", "en", "zh"]
    assert [len(s.segments) for s in streams] == [3, 2, 1]
    assert len({s.id for s in streams}) == 3


def test_long_form_options_are_checked() -> None:
    with pytest.raises(DatasetError, match="min_pause_ms"):
        LongFormOptions(min_pause_ms=900, max_pause_ms=300)


# ---------------------------------------------------------------------------------------
# Text sets


def test_flores_and_wmt22_text_pairs(tmp_path: Path) -> None:
    flores = tmp_path / "flores200-devtest"
    flores.mkdir()
    (flores / "eng_Latn.devtest").write_text("One.\nTwo.\nThree.\n", encoding="utf-8")
    (flores / "deu_Latn.devtest").write_text("Eins.\nZwei.\nDrei.\n", encoding="utf-8")
    pairs = load_text_pairs("flores200-devtest", pair("de-en"), limit=2, root=tmp_path)
    assert [(p.index, p.source, p.reference) for p in pairs] == [(0, "Eins.", "One."), (1, "Zwei.", "Two.")]
    with pytest.raises(DatasetError, match=r"unknown pair en-ja .*jpn_Jpan"):
        load_text_pairs("flores200-devtest", pair("en-ja"), root=tmp_path)

    wmt = tmp_path / "wmt22"
    wmt.mkdir()
    (wmt / "en-de.src").write_text("Hi.\n", encoding="utf-8")
    (wmt / "en-de.ref").write_text("Hallo.\n", encoding="utf-8")
    assert load_text_pairs("wmt22", pair("en-de"), root=tmp_path)[0].reference == "Hallo."
    with pytest.raises(DatasetError, match="unknown pair en-fr for wmt22"):
        load_text_pairs("wmt22", pair("en-fr"), root=tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="the datasets library is installed")
def test_few_shot_examples_are_whole_wmt22_sentences(tmp_path: Path) -> None:
    wmt = tmp_path / "wmt22"
    wmt.mkdir()
    long_enough = "The council met on Tuesday to discuss the new budget for the city's schools."
    (wmt / "en-de.src").write_text(f"Hi.\n{long_enough}\n{'x' * 300}\n", encoding="utf-8")
    (wmt / "en-de.ref").write_text("Hallo.\nDer Rat tagte am Dienstag.\nx\n", encoding="utf-8")
    assert datasets.few_shot_examples(pair("en-de"), 1, tmp_path) == ((long_enough, "Der Rat tagte am Dienstag."),)
    assert datasets.few_shot_examples(pair("en-de"), 0, tmp_path) == ()
    with pytest.raises(DatasetError, match="only 1 example"):
        datasets.few_shot_examples(pair("en-de"), 2, tmp_path)


def test_hub_loader_without_datasets_says_how_to_install() -> None:
    with pytest.raises(DatasetError, match="pip install datasets"):
        hub.load_hub(datasets.HUB_FLEURS, pair("en-de"), limit=1)


def test_unknown_speech_dataset() -> None:
    with pytest.raises(DatasetError, match="unknown speech dataset"):
        load_speech("librispeech", [pair("en-de")])


# ---------------------------------------------------------------------------------------
# The real FLEURS-mini beside the repo


@pytest.fixture(scope="module")
def fleurs_mini() -> list[SpeechInstance]:
    try:
        return load_fleurs_mini()
    except DatasetError:
        pytest.skip("evaluation data not found beside the repo (../shared/data)")


def test_real_fleurs_mini(fleurs_mini: list[SpeechInstance]) -> None:
    assert len(fleurs_mini) == 45
    assert len(select(fleurs_mini, pair("en-de"))) == 12
    assert len(select(fleurs_mini, pair("zh-en"))) == 2
    assert all(i.audio_path.exists() for i in fleurs_mini)


def test_real_long_form_streams(fleurs_mini: list[SpeechInstance]) -> None:
    streams = load_speech("fleurs-mini-long", [pair("zh-en")])["zh-en"]
    (stream,) = streams
    assert len(stream.segments) == 2
    assert stream.segments[1].start_ms > stream.segments[0].end_ms
    assert stream.duration_ms == pytest.approx(stream.segments[-1].end_ms)
