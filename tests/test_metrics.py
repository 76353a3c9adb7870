"""Latency, flicker and quality metrics against hand-computed values."""

from __future__ import annotations

import importlib.util

import pytest
import sacrebleu

from streamst.errors import LanguageError
from streamst.metrics import (
    Erasure,
    InstanceTrace,
    QualityScore,
    average_lagging,
    average_proportion,
    average_token_delay,
    bleu,
    chrf,
    corpus_erasure,
    corpus_latency,
    differentiable_average_lagging,
    end_offset,
    erasure,
    first_commit_latency_ms,
    instance_latency,
    latency_unit,
    length_adaptive_average_lagging,
    quality_retention,
    real_time_factor,
    reference_length,
    sacrebleu_tokenizer,
    source_error_rate,
    start_offset,
    units,
)

# Case A: 4 words committed at 500, 1000, 1500, 2500 ms of a 2000 ms source; the
# reference has 3 words; elapsed adds 100, 200, 300, 400 ms of compute.
TRACE_A = InstanceTrace(
    index=0,
    prediction_units=("a", "b", "c", "d"),
    delays_ms=(500, 1000, 1500, 2500),
    elapsed_ms=(600, 1200, 1800, 2900),
    source_length_ms=2000,
    reference="w x y",
)


# ---------------------------------------------------------------------------------------
# AL, LAAL, DAL, AP, ATD, offsets on one instance


def test_case_a_non_computation_aware() -> None:
    scores = instance_latency(TRACE_A)
    # AL: |X|/|Y*| = 2000/3 = 666.67; d_i − (i−1)·666.67 = 500, 333.33, 166.67, 500;
    # d_4 = 2500 ≥ 2000 so τ = 4; AL = 1500 / 4 = 375.
    assert scores.al_ms == pytest.approx(375.0)
    # LAAL: |X|/max(4, 3) = 500; terms 500, 500, 500, 2500 − 1500 = 1000; 2500 / 4 = 625.
    assert scores.laal_ms == pytest.approx(625.0)
    # DAL: |X|/|Y| = 500; d' = 500, max(1000, 1000), max(1500, 1500), max(2500, 2000)
    # = 500, 1000, 1500, 2500; minus 0, 500, 1000, 1500 → 500·3 + 1000 = 2500; / 4 = 625.
    assert scores.dal_ms == pytest.approx(625.0)
    # AP: (500 + 1000 + 1500 + 2500) / (2000 · 3) = 5500 / 6000.
    assert scores.ap == pytest.approx(5500 / 6000)
    # ATD: one chunk per unit; source pseudo-words of 300 ms: chunk durations 500, 500,
    # 500, 1000 → words ending at 300, 500 | 800, 1000 | 1300, 1500 | 1800, 2100, 2400,
    # 2500. Unit t aligns to source word t (never more words before its chunk than
    # source words): 500 − 300, 1000 − 500, 1500 − 800, 2500 − 1000 = 200, 500, 700,
    # 1500; mean 725.
    assert scores.atd_ms == pytest.approx(725.0)
    assert scores.start_offset_ms == 500.0
    # EndOffset: 2500 − 2000.
    assert scores.end_offset_ms == 500.0
    assert scores.n_instances == 1 and not scores.computation_aware


def test_case_a_computation_aware() -> None:
    scores = instance_latency(TRACE_A, computation_aware=True)
    # AL on elapsed: 600, 1200 − 666.67, 1800 − 1333.33, 2900 − 2000 = 600, 533.33,
    # 466.67, 900 (τ = 4, 2900 ≥ 2000); 2500 / 4 = 625.
    assert scores.al_ms == pytest.approx(625.0)
    # LAAL on elapsed: 600, 700, 800, 1400; 3500 / 4 = 875.
    assert scores.laal_ms == pytest.approx(875.0)
    # DAL on elapsed: d' = 600, 1200, 1800, 2900; minus 0, 500, 1000, 1500; 3500 / 4.
    assert scores.dal_ms == pytest.approx(875.0)
    # AP on elapsed: 6500 / 6000.
    assert scores.ap == pytest.approx(6500 / 6000)
    # ATD: compute overhead e − d = 100, 200, 300, 400 → 100 ms per unit; unit end times
    # max(d_t, T(t−1)) + 100 = 600, 1100, 1600, 2600; minus source words 300, 500, 800,
    # 1000 = 300, 600, 800, 1600; mean 825.
    assert scores.atd_ms == pytest.approx(825.0)
    assert scores.start_offset_ms == 600.0
    assert scores.end_offset_ms == 900.0


def test_first_delay_beyond_source_length() -> None:
    delays = (2500.0, 2600.0)
    # d_1 = 2500 > |X| = 2000: AL and LAAL are d_1.
    assert average_lagging(delays, 2000, 3) == 2500.0
    assert length_adaptive_average_lagging(delays, 2000, 3) == 2500.0
    # DAL: |X|/|Y| = 1000; d' = 2500, max(2600, 3500) = 3500; (2500 + 2500) / 2.
    assert differentiable_average_lagging(delays, 2000) == pytest.approx(2500.0)
    # AP: 5100 / (2000 · 3).
    assert average_proportion(delays, 2000, 3) == pytest.approx(0.85)
    assert end_offset(delays, 2000) == 600.0


def test_prediction_longer_than_reference() -> None:
    delays = (0.0, 0.0, 1000.0, 1000.0, 2000.0, 2000.0)
    # AL with |Y*| = 2: |X|/|Y*| = 1000; terms 0, −1000, −1000, −2000, −2000 and
    # d_5 = 2000 ≥ |X| stops at τ = 5: −6000 / 5 = −1200 (over-generation rewarded).
    assert average_lagging(delays, 2000, 2) == pytest.approx(-1200.0)
    # LAAL: |X|/max(6, 2) = 333.33; terms 0, −333.33, 333.33, 0, 666.67; τ = 5;
    # 666.67 / 5 = 133.33.
    assert length_adaptive_average_lagging(delays, 2000, 2) == pytest.approx(400 / 3)
    # DAL: |X|/|Y| = 333.33; d' = 0, 333.33, 1000, 1333.33, 2000, 2333.33; minus
    # (i−1)·333.33 → 0, 0, 333.33, 333.33, 666.67, 666.67; 2000 / 6.
    assert differentiable_average_lagging(delays, 2000) == pytest.approx(1000 / 3)
    # AP: 6000 / (2000 · 2) = 1.5, above 1 because it divides by the reference length.
    assert average_proportion(delays, 2000, 2) == pytest.approx(1.5)


def test_character_units() -> None:
    prediction = units("你好，世界", "zh")
    assert prediction == ["你", "好", "，", "世", "界"]
    trace = InstanceTrace(
        index=0,
        prediction_units=tuple(prediction),
        delays_ms=(400, 800, 800, 1200, 1600),
        elapsed_ms=(),
        source_length_ms=1600,
        reference="你好 世界。",
        latency_unit="char",
    )
    # SimulEval counts len(reference.strip()): the inner space counts, 6 characters.
    assert trace.reference_length == 6
    assert trace.prediction == "你好，世界"
    scores = instance_latency(trace)
    # AL: |X|/|Y*| = 1600/6 = 266.67; Σd = 4800, Σ(i−1) = 10 → 4800 − 2666.67 = 2133.33;
    # d_5 = 1600 ≥ |X|, τ = 5 → 426.67.
    assert scores.al_ms == pytest.approx(1280 / 3)
    # LAAL: max(5, 6) = 6, the same rate as AL.
    assert scores.laal_ms == pytest.approx(1280 / 3)
    # DAL: |X|/|Y| = 320; d' = 400, 800, 1120, 1440, 1760; minus 0, 320, 640, 960,
    # 1280 → 400 + 4·480 = 2320; / 5 = 464.
    assert scores.dal_ms == pytest.approx(464.0)
    # AP: 4800 / (1600 · 6).
    assert scores.ap == pytest.approx(0.5)
    # No elapsed times: no computation-aware figures.
    assert instance_latency(trace, computation_aware=True).n_instances == 0


def test_empty_prediction_is_skipped_in_the_corpus_mean() -> None:
    empty = InstanceTrace(1, (), (), (), 1000, "some words")
    scores = instance_latency(empty)
    assert scores.n_instances == 0 and scores.al_ms is None and scores.atd_ms is None
    assert first_commit_latency_ms(empty) is None
    corpus = corpus_latency([TRACE_A, empty])
    assert corpus.n_instances == 1
    assert corpus.al_ms == pytest.approx(375.0)
    assert corpus_latency([empty]).al_ms is None
    with pytest.raises(ValueError, match="empty prediction"):
        average_lagging([], 1000, 2)


def test_corpus_mean() -> None:
    late = InstanceTrace(1, ("a", "b"), (3000, 3000), (3100, 3200), 2000, "w x y")
    corpus = corpus_latency([TRACE_A, late])
    # AL: (375 + 3000) / 2, d_1 = 3000 > 2000 for the second instance.
    assert corpus.al_ms == pytest.approx(1687.5)
    # ATD of the second: one chunk of 2 units at 3000 against ten 300 ms source words:
    # 3000 − 300, 3000 − 600 → 2550; (725 + 2550) / 2.
    assert corpus.atd_ms == pytest.approx(1637.5)
    assert corpus.as_simuleval()["AL"] == corpus.al_ms
    ca = corpus_latency([TRACE_A, late], computation_aware=True)
    assert set(ca.as_simuleval()) >= {"AL_CA", "LAAL_CA", "ATD_CA"}


def test_reference_length_choice() -> None:
    no_reference = InstanceTrace(0, ("a", "b"), (500, 1000), (), 2000, None)
    # |Y*| falls back to |Y| = 2: 500 − 0, 1000 − 1000; no delay reaches 2000, τ = 2.
    assert instance_latency(no_reference).al_ms == pytest.approx(250.0)
    with_reference = InstanceTrace(0, ("a", "b"), (500, 1000), (), 2000, "a b c d")
    # |Y*| = 4: 500 − 0, 1000 − 500 → 500.
    assert instance_latency(with_reference).al_ms == pytest.approx(500.0)
    assert instance_latency(with_reference, use_reference_length=False).al_ms == 250.0
    # SimulEval splits references on single spaces.
    assert reference_length("a  b", "word") == 3
    assert reference_length("", "word") == 1
    empty_char_reference = InstanceTrace(0, ("好",), (500,), (), 2000, "", "char")
    with pytest.raises(ValueError, match="Instance 0"):
        instance_latency(empty_char_reference)


def test_atd_with_shared_delays() -> None:
    # Two chunks: units 1-2 at 600 ms, unit 3 at 900 ms. Source words: 300, 600 | 900.
    # Unit 1 → word 1 (300), unit 2 → word 2 (600); chunk 2 has 2 units and 2 source
    # words before it, unit 3 → word 3 (900). Delays 600 − 300, 600 − 600, 900 − 900.
    assert average_token_delay([600, 600, 900]) == pytest.approx(100.0)


def test_offsets_and_first_commit() -> None:
    assert start_offset([120.0, 300.0]) == 120.0
    assert first_commit_latency_ms(TRACE_A) == 500.0
    assert first_commit_latency_ms(TRACE_A, speech_start_ms=200) == 300.0
    assert first_commit_latency_ms(TRACE_A, computation_aware=True) == 600.0


def test_real_time_factor() -> None:
    assert real_time_factor(1500, 6000) == 0.25
    with pytest.raises(ValueError):
        real_time_factor(1500, 0)


def test_trace_validation() -> None:
    with pytest.raises(ValueError, match="delays"):
        InstanceTrace(0, ("a", "b"), (1.0,), (), 1000, "x")
    with pytest.raises(ValueError, match="non-decreasing"):
        InstanceTrace(0, ("a", "b"), (500, 400), (), 1000, "x")
    with pytest.raises(ValueError, match="positive"):
        InstanceTrace(0, ("a",), (500,), (), 0, "x")
    with pytest.raises(ValueError, match="char unit"):
        InstanceTrace(0, ("你好",), (500,), (), 1000, "x", "char")
    trace = InstanceTrace(0, ["a"], [500], [510], 1000, "x")
    assert trace.delays_ms == (500.0,) and isinstance(trace.prediction_units, tuple)


# ---------------------------------------------------------------------------------------
# Units and tokenizers


def test_units() -> None:
    assert units("Hello,  world!\n", "en") == ["Hello,", "world!"]
    assert units("你好， 世界", "zh-Hant") == ["你", "好", "，", "世", "界"]
    assert units("안녕 하세요", "ko") == ["안", "녕", "하", "세", "요"]
    assert units("こんにちは", "jpn_Jpan") == list("こんにちは")
    assert units("唔該", "yue_Hant") == ["唔", "該"]
    assert latency_unit("zh_TW") == "char"
    assert latency_unit("de") == "word"
    with pytest.raises(LanguageError):
        latency_unit("")


def test_sacrebleu_tokenizers() -> None:
    assert sacrebleu_tokenizer("zh") == "zh"
    assert sacrebleu_tokenizer("zh-Hant") == "zh"
    assert sacrebleu_tokenizer("ko") == "char"
    assert sacrebleu_tokenizer("en") == "13a"
    has_mecab = importlib.util.find_spec("MeCab") is not None
    assert sacrebleu_tokenizer("ja") == ("ja-mecab" if has_mecab else "char")


# ---------------------------------------------------------------------------------------
# Quality


def test_bleu_chinese_uses_zh_tokenizer() -> None:
    hypotheses, references = ["我喜欢狗。"], ["我喜欢猫。"]
    score = bleu(hypotheses, references, "zh")
    assert "tok:zh" in score.signature
    expected = sacrebleu.corpus_bleu(hypotheses, [references], tokenize="zh").score
    assert score.score == pytest.approx(expected)
    # Unsegmented Chinese is one "word" to 13a: no n-gram matches.
    assert sacrebleu.corpus_bleu(hypotheses, [references], tokenize="13a").score == 0.0
    assert score.score > 0.0


def test_bleu_and_chrf_english() -> None:
    hypotheses = ["the cat sat on the mat", "a dog barked"]
    references = ["the cat sat on a mat", "a dog barked loudly"]
    score = bleu(hypotheses, references, "en")
    assert score.metric == "BLEU" and "tok:13a" in score.signature
    assert score.score == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    chrf_score = chrf(hypotheses, references)
    assert chrf_score.metric == "chrF"
    assert chrf_score.score == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score)
    with pytest.raises(ValueError, match="one hypothesis per reference"):
        bleu(hypotheses, references[:1], "en")


def test_quality_retention() -> None:
    assert quality_retention(16.0, 20.0) == pytest.approx(0.8)
    streaming = QualityScore("BLEU", 12.0, "tok:zh")
    offline = QualityScore("BLEU", 16.0, "tok:zh")
    assert quality_retention(streaming, offline) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="score both the same way"):
        quality_retention(streaming, QualityScore("BLEU", 16.0, "tok:13a"))
    with pytest.raises(ValueError):
        quality_retention(1.0, 0.0)


# ---------------------------------------------------------------------------------------
# Flicker


def test_erasure_counts_retracted_units() -> None:
    displayed = [
        ["I"],
        ["I", "am"],
        ["I", "was", "here"],  # "am" retracted: 1 unit
        ["I", "was", "here", "today"],
    ]
    result = erasure(displayed)
    # 1 retracted / 4 final units.
    assert result == Erasure(n_erased_units=1, n_final_units=4)
    assert result.normalized == pytest.approx(0.25)
    # "b c" replaced by "x": 2 units erased, final length 2.
    assert erasure([["a", "b", "c"], ["a", "x"]]).normalized == pytest.approx(1.0)


def test_erasure_append_only_and_corpus() -> None:
    assert erasure([["a"], ["a", "b"], ["a", "b", "c"]]).normalized == 0.0
    assert erasure([]).normalized == 0.0
    assert erasure([["a"], []]).normalized == float("inf")
    total = corpus_erasure([Erasure(1, 4), Erasure(0, 6)])
    # (1 + 0) / (4 + 6).
    assert total.normalized == pytest.approx(0.1)


def test_source_error_rate_ignores_case_and_punctuation() -> None:
    assert source_error_rate(["Hello, World!"], ["hello world"], "en") == 0.0
    assert source_error_rate(["hello there world"], ["Hello world."], "en") == pytest.approx(50.0)


def test_source_error_rate_counts_characters_for_chinese_and_pools_the_corpus() -> None:
    # One character missing of six, and an empty hypothesis: all four characters deleted.
    rate = source_error_rate(["这是个测试。", ""], ["这是一个测试。", "你好世界"], "zh")
    assert rate == pytest.approx(100 * (1 + 4) / (6 + 4))


def test_source_error_rate_leaves_out_references_without_words() -> None:
    assert source_error_rate(["something"], ["..."], "en") == 0.0
