"""Latency and quality of streaming translations, computed as SimulEval 1.1.4 does.

Inputs are per-instance traces: for each committed target unit (word, or character for
targets written without spaces: Chinese, Japanese, Korean, Cantonese, Thai, ...; see
:func:`latency_unit`) the ms of source audio consumed when it was committed
(``delays_ms``) and, for computation-aware figures, that plus the wall-clock processing
time since the instance started (``elapsed_ms``).

Notation in the formulas below: ``|X|`` source length in ms, ``d_i`` the delay of the i-th
target unit (1-based), ``|Y|`` the number of predicted units, ``|Y*|`` the reference length
in units as SimulEval counts it (see :func:`reference_length`).

Every latency metric is available non-computation-aware (on ``delays_ms``) and
computation-aware (on ``elapsed_ms``); the corpus figure is the plain mean over the
instances that have a non-empty timeline, as SimulEval reports it.
"""

from __future__ import annotations

import functools
import itertools
import logging
import statistics
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from streamst.languages import LatencyUnit, resolve

logger = logging.getLogger("streamst.metrics")

ATD_SOURCE_WORD_MS = 300.0
"""SimulEval's assumed duration of one source word when the source is speech (ATD)."""

ATD_TARGET_TEXT_UNIT_MS = 0.0
"""SimulEval's duration of one target text unit when the target is text (ATD)."""


# ---------------------------------------------------------------------------------------
# Units


def latency_unit(lang: str) -> LatencyUnit:
    """The unit latency is counted in for a target language, as :mod:`streamst.languages` has it.

    ``"char"`` for scripts written without spaces between words (Chinese in any script,
    Cantonese, Japanese, Korean, Thai, ...), ``"word"`` otherwise. Raises LanguageError for
    an unknown or empty code.
    """
    return resolve(lang).latency_unit


def units(text: str, lang: str) -> list[str]:
    """Split ``text`` into latency units of language ``lang``.

    Words (whitespace split) for most languages; characters, whitespace ignored, for the
    languages whose :func:`latency_unit` is ``"char"``.
    """
    if latency_unit(lang) == "char":
        return [c for c in text if not c.isspace()]
    return text.split()


def join_units(prediction_units: Sequence[str], unit: LatencyUnit) -> str:
    """The prediction string SimulEval writes: words joined by spaces, characters by nothing."""
    return ("" if unit == "char" else " ").join(prediction_units)


def reference_length(reference: str, unit: LatencyUnit) -> int:
    """Length of a reference in units, exactly as SimulEval 1.1.4 counts it.

    ``word``: ``len(reference.split(" "))`` (a single-space split, so ``""`` counts 1);
    ``char``: ``len(reference.strip())`` (inner whitespace counts, unlike :func:`units`).
    """
    if unit == "word":
        return len(reference.split(" "))
    if unit == "char":
        return len(reference.strip())
    raise ValueError(f"Unknown latency unit {unit!r}; valid units are 'word' and 'char'.")


def _is_unit(unit: str, latency_unit: LatencyUnit) -> bool:
    """A word is non-empty without whitespace; a char unit is one non-space character."""
    if latency_unit == "char":
        return len(unit) == 1 and not unit.isspace()
    return bool(unit) and not any(c.isspace() for c in unit)


# ---------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class InstanceTrace:
    """What one instance (utterance) produced, on the source-audio timeline."""

    index: int  # position in the corpus, from 0
    prediction_units: tuple[str, ...]  # committed target units, in order
    delays_ms: tuple[float, ...]  # source ms consumed when each unit was committed
    elapsed_ms: tuple[float, ...]  # delay + processing ms since the start; () if unknown
    source_length_ms: float  # duration of the source audio
    reference: str | None  # reference translation; None scores against the prediction length
    latency_unit: LatencyUnit = "word"  # how units and the reference length are counted
    source: tuple[str, ...] = ()  # lines describing the source (e.g. its audio path)

    def __post_init__(self) -> None:
        for name in ("prediction_units", "delays_ms", "elapsed_ms", "source"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "delays_ms", tuple(float(d) for d in self.delays_ms))
        object.__setattr__(self, "elapsed_ms", tuple(float(e) for e in self.elapsed_ms))
        object.__setattr__(self, "source_length_ms", float(self.source_length_ms))
        self._validate()

    def _validate(self) -> None:
        n_units = len(self.prediction_units)
        if len(self.delays_ms) != n_units:
            raise ValueError(
                f"Instance {self.index}: {len(self.delays_ms)} delays for {n_units} units; "
                "give one delay per committed unit."
            )
        if self.elapsed_ms and len(self.elapsed_ms) != n_units:
            raise ValueError(
                f"Instance {self.index}: {len(self.elapsed_ms)} elapsed times for {n_units} "
                "units; give one per committed unit, or none."
            )
        if not self.source_length_ms > 0:
            raise ValueError(
                f"Instance {self.index}: source_length_ms={self.source_length_ms}; "
                "latency needs a positive source length."
            )
        if self.latency_unit not in ("word", "char"):
            raise ValueError(
                f"Instance {self.index}: latency_unit={self.latency_unit!r}; "
                "valid units are 'word' and 'char'."
            )
        for unit in self.prediction_units:
            if not _is_unit(unit, self.latency_unit):
                raise ValueError(
                    f"Instance {self.index}: {unit!r} is not one {self.latency_unit} unit; "
                    "split the prediction with streamst.metrics.units()."
                )
        for name in ("delays_ms", "elapsed_ms"):
            times = getattr(self, name)
            if any(later < earlier for earlier, later in itertools.pairwise(times)):
                raise ValueError(f"Instance {self.index}: {name} must be non-decreasing.")

    def timeline_ms(self, computation_aware: bool) -> tuple[float, ...]:
        """``elapsed_ms`` when ``computation_aware``, else ``delays_ms``."""
        return self.elapsed_ms if computation_aware else self.delays_ms

    @property
    def reference_length(self) -> int | None:
        """Reference length in units as SimulEval counts it; None without a reference."""
        if self.reference is None:
            return None
        return reference_length(self.reference, self.latency_unit)

    @property
    def prediction(self) -> str:
        """The prediction as SimulEval writes it (see :func:`join_units`)."""
        return join_units(self.prediction_units, self.latency_unit)


@dataclass(frozen=True)
class LatencyScores:
    """Latency of one instance, or the mean over a corpus, on one timeline.

    A field is None when no instance had a non-empty timeline (e.g. an empty prediction).
    """

    computation_aware: bool  # on elapsed_ms (True) or delays_ms (False)
    n_instances: int  # instances the figures are a mean over
    al_ms: float | None  # Average Lagging
    laal_ms: float | None  # Length-Adaptive Average Lagging
    dal_ms: float | None  # Differentiable Average Lagging
    ap: float | None  # Average Proportion, a fraction of the source
    atd_ms: float | None  # Average Token Delay
    start_offset_ms: float | None  # timeline of the first unit
    end_offset_ms: float | None  # timeline of the last unit minus the source length

    def as_simuleval(self) -> dict[str, float | None]:
        """The figures under SimulEval's column names (``AL`` or ``AL_CA``, ...)."""
        suffix = "_CA" if self.computation_aware else ""
        values = {
            "AL": self.al_ms,
            "LAAL": self.laal_ms,
            "AP": self.ap,
            "DAL": self.dal_ms,
            "ATD": self.atd_ms,
            "StartOffset": self.start_offset_ms,
            "EndOffset": self.end_offset_ms,
        }
        return {name + suffix: value for name, value in values.items()}


# ---------------------------------------------------------------------------------------
# Latency metrics on one instance


def _require_delays(delays_ms: Sequence[float]) -> None:
    if len(delays_ms) == 0:
        raise ValueError("Latency is undefined for an empty prediction (no delays).")


def _require_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name}={value}; it must be positive.")


def _lagging(delays_ms: Sequence[float], source_length_ms: float, target_length: float) -> float:
    """The AL sum shared by AL and LAAL, with rate ``gamma = target_length / |X|``."""
    _require_delays(delays_ms)
    _require_positive("source_length_ms", source_length_ms)
    if delays_ms[0] > source_length_ms:
        return delays_ms[0]
    _require_positive("target_length", target_length)
    gamma = target_length / source_length_ms
    total = 0.0
    tau = 0
    for i_minus_1, delay in enumerate(delays_ms):
        total += delay - i_minus_1 / gamma
        tau = i_minus_1 + 1
        if delay >= source_length_ms:
            break
    return total / tau


def average_lagging(
    delays_ms: Sequence[float], source_length_ms: float, reference_length: int
) -> float:
    """Average Lagging (Ma et al., 2019, STACL), SimulEval's reference-based form.

    ``AL = 1/τ · Σ_{i=1..τ} (d_i − (i−1)·|X|/|Y*|)`` with ``τ = min{i : d_i ≥ |X|}``
    (``|Y|`` when no delay reaches the end of the source). If ``d_1 > |X|``, ``AL = d_1``.
    ``reference_length`` is ``|Y*|``; SimulEval passes ``|Y|`` when there is no reference.
    """
    return _lagging(delays_ms, source_length_ms, reference_length)


def length_adaptive_average_lagging(
    delays_ms: Sequence[float], source_length_ms: float, reference_length: int
) -> float:
    """Length-Adaptive Average Lagging (Papi et al., 2022).

    AL with the rate taken from the longer of prediction and reference, so over-generation
    is not rewarded: ``LAAL = 1/τ · Σ_{i=1..τ} (d_i − (i−1)·|X|/max(|Y|, |Y*|))``,
    ``τ = min{i : d_i ≥ |X|}``; ``LAAL = d_1`` if ``d_1 > |X|``.
    """
    return _lagging(delays_ms, source_length_ms, max(len(delays_ms), reference_length))


def differentiable_average_lagging(delays_ms: Sequence[float], source_length_ms: float) -> float:
    """Differentiable Average Lagging (Cherry & Foster, 2019; Arivazhagan et al., 2019).

    ``d'_1 = d_1``, ``d'_i = max(d_i, d'_{i−1} + |X|/|Y|)``;
    ``DAL = 1/|Y| · Σ_{i=1..|Y|} (d'_i − (i−1)·|X|/|Y|)``.
    As in SimulEval, ``|Y|`` is the prediction length, whatever the reference.
    """
    _require_delays(delays_ms)
    _require_positive("source_length_ms", source_length_ms)
    n_units = len(delays_ms)
    gamma = n_units / source_length_ms
    total = 0.0
    previous = 0.0
    for i_minus_1, delay in enumerate(delays_ms):
        adjusted = delay if i_minus_1 == 0 else max(delay, previous + 1 / gamma)
        total += adjusted - i_minus_1 / gamma
        previous = adjusted
    return total / n_units


def average_proportion(
    delays_ms: Sequence[float], source_length_ms: float, reference_length: int
) -> float:
    """Average Proportion (Cho & Esipova, 2016), SimulEval's form.

    ``AP = Σ_{i=1..|Y|} d_i / (|X| · |Y*|)``: the sum runs over the prediction but
    SimulEval divides by the reference length (``|Y|`` without a reference), so an
    over-long prediction can score above 1.
    """
    _require_delays(delays_ms)
    _require_positive("source_length_ms", source_length_ms)
    _require_positive("reference_length", reference_length)
    return sum(delays_ms) / (source_length_ms * reference_length)


def start_offset(delays_ms: Sequence[float]) -> float:
    """StartOffset: ``d_1``, ms of source consumed before the first unit."""
    _require_delays(delays_ms)
    return delays_ms[0]


def end_offset(delays_ms: Sequence[float], source_length_ms: float) -> float:
    """EndOffset: ``d_|Y| − |X|``, how long after the source ends the last unit came."""
    _require_delays(delays_ms)
    return delays_ms[-1] - source_length_ms


def average_token_delay(
    delays_ms: Sequence[float],
    elapsed_ms: Sequence[float] | None = None,
    source_word_ms: float = ATD_SOURCE_WORD_MS,
) -> float:
    """Average Token Delay (Kano et al., 2023) for speech input and text output, as SimulEval.

    Consecutive units with the same delay form one output chunk; the source read before
    chunk ``k`` is cut into pseudo-words of ``source_word_ms`` (the remainder is one shorter
    word). Target unit ``t`` ends at ``T(t) = max(d_t, T(t−1)) + c_t`` (text units take no
    time; ``c_t`` is its compute time, 0 unless ``elapsed_ms`` is given). It is aligned to
    source word ``s(t) = min(t − max(0, Acc_y(k) − Acc_x(k)), Acc_x(k+1))`` where
    ``Acc_x(k)``, ``Acc_y(k)`` count source and target units in chunks before ``k``.
    ``ATD = 1/|Y| · Σ_t (T(t) − S(s(t)))`` with ``S(s)`` the end time of source word ``s``.

    With ``elapsed_ms`` (computation-aware), ``c_t`` is the growth of ``e_t − d_t``.
    """
    _require_delays(delays_ms)
    compute_ms = _atd_compute_times(delays_ms, elapsed_ms)
    target_sizes, target_chunk = _atd_target_chunks(delays_ms)
    source_sizes, source_end_ms = _atd_source_words(delays_ms, source_word_ms)
    target_end_ms = _atd_target_end_times(delays_ms, compute_ms)
    token_delays_ms = []
    for t in range(1, len(target_chunk)):
        chunk = target_chunk[t]
        n_source_before = sum(source_sizes[:chunk])
        n_target_before = sum(target_sizes[:chunk])
        aligned = t - max(0, n_target_before - n_source_before)
        aligned = min(aligned, sum(source_sizes[: chunk + 1]))
        token_delays_ms.append(target_end_ms[t] - source_end_ms[aligned])
    return float(statistics.mean(token_delays_ms))


def _atd_compute_times(
    delays_ms: Sequence[float], elapsed_ms: Sequence[float] | None
) -> list[float]:
    """Per-unit compute ms: the increments of ``elapsed − delay`` (zeros without elapsed)."""
    if not elapsed_ms:
        return [0.0] * len(delays_ms)
    if list(elapsed_ms) == [0] * len(delays_ms):
        return list(elapsed_ms)
    compute_ms = []
    previous_overhead_ms = 0.0
    for elapsed, delay in zip(elapsed_ms, delays_ms, strict=True):
        compute_ms.append(elapsed - delay - previous_overhead_ms)
        previous_overhead_ms = elapsed - delay
    return compute_ms


def _atd_target_chunks(delays_ms: Sequence[float]) -> tuple[list[int], list[int]]:
    """Chunk sizes (runs of equal delays) and each unit's chunk number, both 0-padded."""
    sizes = [0]
    previous = None
    for delay in delays_ms:
        if delay != previous:
            sizes.append(1)
        else:
            sizes[-1] += 1
        previous = delay
    chunk_of_unit = [0]
    for chunk, size in enumerate(sizes[1:], 1):
        chunk_of_unit += [chunk] * size
    return sizes, chunk_of_unit


def _atd_source_words(
    delays_ms: Sequence[float], source_word_ms: float
) -> tuple[list[int], list[float]]:
    """Pseudo-words per source chunk and each pseudo-word's end time, both 0-padded."""
    distinct = list(dict.fromkeys(delays_ms))
    sizes = [0]
    end_ms = [0.0]
    previous_ms = 0.0
    for delay in distinct:
        n_full, rest = divmod(delay - previous_ms, source_word_ms)
        previous_ms = delay
        lengths = int(n_full) * [source_word_ms] + ([rest] if rest != 0 else [])
        sizes.append(len(lengths))
        for length in lengths:
            end_ms.append(end_ms[-1] + length)
    return sizes, end_ms


def _atd_target_end_times(delays_ms: Sequence[float], compute_ms: Sequence[float]) -> list[float]:
    """End time of each target unit, 0-padded: ``T(t) = max(d_t, T(t−1)) + len + c_t``."""
    end_ms = [0.0]
    for delay, compute in zip(delays_ms, compute_ms, strict=True):
        end_ms.append(max(delay, end_ms[-1]) + ATD_TARGET_TEXT_UNIT_MS + compute)
    return end_ms


# ---------------------------------------------------------------------------------------
# Per instance and corpus


def _target_length(trace: InstanceTrace, use_reference_length: bool) -> int:
    """``|Y*|`` as SimulEval picks it: the reference length, else the prediction length."""
    ref_length = trace.reference_length
    if not use_reference_length or ref_length is None:
        return len(trace.delays_ms)
    return ref_length


def _empty_scores(computation_aware: bool) -> LatencyScores:
    return LatencyScores(computation_aware, 0, None, None, None, None, None, None, None)


def instance_latency(
    trace: InstanceTrace,
    computation_aware: bool = False,
    use_reference_length: bool = True,
) -> LatencyScores:
    """All latency metrics of one instance; every field None if its timeline is empty.

    ``use_reference_length=False`` is SimulEval's ``--no-use-ref-len``. Computation-aware
    ATD uses the delays plus per-unit compute times, as SimulEval does.
    """
    timeline = trace.timeline_ms(computation_aware)
    if not timeline:
        return _empty_scores(computation_aware)
    source_ms = trace.source_length_ms
    target_length = _target_length(trace, use_reference_length)
    try:
        return LatencyScores(
            computation_aware=computation_aware,
            n_instances=1,
            al_ms=average_lagging(timeline, source_ms, target_length),
            laal_ms=length_adaptive_average_lagging(timeline, source_ms, target_length),
            dal_ms=differentiable_average_lagging(timeline, source_ms),
            ap=average_proportion(timeline, source_ms, target_length),
            atd_ms=average_token_delay(
                trace.delays_ms, trace.elapsed_ms if computation_aware else None
            ),
            start_offset_ms=start_offset(timeline),
            end_offset_ms=end_offset(timeline, source_ms),
        )
    except ValueError as e:
        raise ValueError(f"Instance {trace.index}: {e}") from e


def corpus_latency(
    traces: Iterable[InstanceTrace],
    computation_aware: bool = False,
    use_reference_length: bool = True,
) -> LatencyScores:
    """Mean of each metric over the instances with a non-empty timeline, as SimulEval reports.

    ``metric = 1/N · Σ_n metric(instance_n)``; instances without units are skipped.
    """
    per_instance = [
        instance_latency(trace, computation_aware, use_reference_length) for trace in traces
    ]
    scored = [scores for scores in per_instance if scores.n_instances > 0]
    n_skipped = len(per_instance) - len(scored)
    if n_skipped:
        logger.info("%d of %d instances have no units; skipped", n_skipped, len(per_instance))
    if not scored:
        return _empty_scores(computation_aware)

    def mean_of(name: str) -> float:
        return float(statistics.mean(getattr(scores, name) for scores in scored))

    return LatencyScores(
        computation_aware=computation_aware,
        n_instances=len(scored),
        al_ms=mean_of("al_ms"),
        laal_ms=mean_of("laal_ms"),
        dal_ms=mean_of("dal_ms"),
        ap=mean_of("ap"),
        atd_ms=mean_of("atd_ms"),
        start_offset_ms=mean_of("start_offset_ms"),
        end_offset_ms=mean_of("end_offset_ms"),
    )


def first_commit_latency_ms(
    trace: InstanceTrace, computation_aware: bool = False, speech_start_ms: float = 0.0
) -> float | None:
    """Time from the start of speech to the first committed unit: ``d_1 − speech_start``.

    With ``speech_start_ms=0`` this is StartOffset. None for an empty prediction.
    """
    timeline = trace.timeline_ms(computation_aware)
    if not timeline:
        return None
    return timeline[0] - speech_start_ms


def real_time_factor(processing_ms: float, audio_ms: float) -> float:
    """Real-time factor ``RTF = processing time / audio duration`` (below 1 keeps up)."""
    _require_positive("audio_ms", audio_ms)
    return processing_ms / audio_ms


# ---------------------------------------------------------------------------------------
# Flicker


@dataclass(frozen=True)
class Erasure:
    """Units retracted from the display, against the length of the final output."""

    n_erased_units: int  # units removed from the end of a displayed hypothesis, summed
    n_final_units: int  # units in the last displayed hypothesis

    @property
    def normalized(self) -> float:
        """``NE = n_erased / n_final``; 0 with nothing erased, inf if all was erased."""
        if self.n_erased_units == 0:
            return 0.0
        if self.n_final_units == 0:
            return float("inf")
        return self.n_erased_units / self.n_final_units


def _common_prefix_length(a: Sequence[str], b: Sequence[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def erasure(displayed: Sequence[Sequence[str]]) -> Erasure:
    """Normalized erasure (Arivazhagan et al., 2020) of a sequence of displayed hypotheses.

    ``NE = 1/|o_T| · Σ_{i=2..T} (|o_{i−1}| − |LCP(o_{i−1}, o_i)|)``: every unit that was
    shown and later replaced counts once per replacement. Hypotheses are unit lists
    (see :func:`units`); an append-only stream scores 0.
    """
    n_erased = sum(
        len(before) - _common_prefix_length(before, now)
        for before, now in itertools.pairwise(displayed)
    )
    n_final = len(displayed[-1]) if displayed else 0
    return Erasure(n_erased_units=n_erased, n_final_units=n_final)


def corpus_erasure(erasures: Iterable[Erasure]) -> Erasure:
    """Erasure over a corpus: erased and final units summed over its segments."""
    items = list(erasures)
    return Erasure(
        n_erased_units=sum(e.n_erased_units for e in items),
        n_final_units=sum(e.n_final_units for e in items),
    )


# ---------------------------------------------------------------------------------------
# Quality


@dataclass(frozen=True)
class QualityScore:
    """A corpus-level quality score with the sacrebleu signature that reproduces it."""

    metric: Literal["BLEU", "chrF"]
    score: float  # 0..100
    signature: str  # e.g. "nrefs:1|case:mixed|eff:no|tok:zh|smooth:exp|version:2.6.0"


MECAB_FALLBACK_TOKENIZER = "char"
"""Used for a ``ja-mecab``/``ko-mecab`` target when the MeCab tokenizer cannot be built."""


@functools.cache
def _mecab_available(tokenizer: str) -> bool:
    """Whether sacrebleu can build ``ja-mecab`` or ``ko-mecab`` (``sacrebleu[ja]``/``[ko]``)."""
    try:
        if tokenizer == "ja-mecab":
            from sacrebleu.tokenizers.tokenizer_ja_mecab import TokenizerJaMecab as Tokenizer
        else:
            from sacrebleu.tokenizers.tokenizer_ko_mecab import TokenizerKoMecab as Tokenizer
        Tokenizer()
    except (ImportError, RuntimeError, AssertionError) as e:
        logger.info("%s unavailable (%s); BLEU uses the char tokenizer", tokenizer, e)
        return False
    return True


def sacrebleu_tokenizer(target_lang: str) -> str:
    """BLEU tokenizer for a target, the one :mod:`streamst.languages` names: ``zh`` for
    Chinese (and Cantonese), ``ja-mecab``/``ko-mecab`` for Japanese/Korean when
    ``sacrebleu[ja]``/``sacrebleu[ko]`` is installed (else ``char``), ``char`` for other
    scripts without word spaces, ``13a`` otherwise."""
    tokenizer = resolve(target_lang).bleu_tokenizer
    if tokenizer.endswith("-mecab") and not _mecab_available(tokenizer):
        return MECAB_FALLBACK_TOKENIZER
    return tokenizer


def _check_corpus(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses for {len(references)} references; "
            "give one hypothesis per reference."
        )
    if not hypotheses:
        raise ValueError("Quality is undefined on an empty corpus.")


def bleu(hypotheses: Sequence[str], references: Sequence[str], target_lang: str) -> QualityScore:
    """Corpus BLEU (Papineni et al., 2002) via sacrebleu with the target's tokenizer.

    ``BLEU = BP · exp(Σ_{n=1..4} ¼ · log p_n)``, ``BP = min(1, exp(1 − r/c))``.
    """
    from sacrebleu.metrics import BLEU

    _check_corpus(hypotheses, references)
    metric = BLEU(tokenize=sacrebleu_tokenizer(target_lang))
    result = metric.corpus_score(list(hypotheses), [list(references)])
    return QualityScore("BLEU", float(result.score), str(metric.get_signature()))


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> QualityScore:
    """Corpus chrF (Popović, 2015) via sacrebleu; character n-grams need no tokenizer.

    ``chrF_β = (1 + β²) · chrP · chrR / (β² · chrP + chrR)``, ``β = 2``, n-grams up to 6.
    """
    from sacrebleu.metrics import CHRF

    _check_corpus(hypotheses, references)
    metric = CHRF()
    result = metric.corpus_score(list(hypotheses), [list(references)])
    return QualityScore("chrF", float(result.score), str(metric.get_signature()))


def _spoken_units(text: str, lang: str) -> str:
    """``text`` as the units a recogniser is scored on: lowercase, punctuation and symbols
    dropped, words (or characters, for a language written without word spaces) joined by
    spaces."""
    kept = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text.lower())
    return " ".join(units(kept, lang))


def source_error_rate(hypotheses: Sequence[str], references: Sequence[str], source_lang: str) -> float:
    """Corpus word error rate of a recogniser's transcripts (character error rate for a
    language written without word spaces), in % of the reference units, via jiwer: errors
    pooled over the corpus, after lowercasing and dropping punctuation. A reference without
    units is left out; 0 when none has any."""
    import jiwer

    _check_corpus(hypotheses, references)
    pairs = [(_spoken_units(h, source_lang), _spoken_units(r, source_lang)) for h, r in zip(hypotheses, references)]
    pairs = [(h, r) for h, r in pairs if r]
    if not pairs:
        return 0.0
    result = jiwer.process_words([r for _, r in pairs], [h for h, _ in pairs])  # an empty hypothesis: all deletions
    return 100.0 * result.wer


def quality_retention(streaming: float | QualityScore, offline: float | QualityScore) -> float:
    """Quality retention ``= streaming score / offline score`` of the same models and inputs.

    Scores given as :class:`QualityScore` must share metric and signature.
    """
    if isinstance(streaming, QualityScore) and isinstance(offline, QualityScore):
        if (streaming.metric, streaming.signature) != (offline.metric, offline.signature):
            raise ValueError(
                f"Cannot compare {streaming.metric} [{streaming.signature}] with "
                f"{offline.metric} [{offline.signature}]; score both the same way."
            )
    streaming_score = streaming.score if isinstance(streaming, QualityScore) else streaming
    offline_score = offline.score if isinstance(offline, QualityScore) else offline
    _require_positive("offline score", offline_score)
    return streaming_score / offline_score
