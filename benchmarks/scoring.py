"""From engine events to SimulEval traces and run scores; the formulas live in streamst.metrics.

A committed target unit (word, or character for zh/ja/ko/yue targets) gets
- ``delay_ms``: source audio the session had consumed when the event carrying it was
  returned (``event.audio_ms``), the non-computation-aware time;
- ``elapsed_ms``: on the simulated clock, that plus the compute time of every push()/finish()
  call so far, including the one that returned it (SimulEval's computation-aware elapsed:
  audio sent so far plus wall time since the instance started, with audio sent instantly);
  on the wall clock at 1×, the wall time since the instance started when the call returned.

A word whose text a later delta extends ("Hel" + "lo") takes the times of the event that
completed it. A unit is readable only after the units before it, so times are made
non-decreasing along the output.

Each output segment (an engine segment: what a final closes) is scored against the
reference segment it overlaps most in time; a clip has one reference segment, a long-form
stream one per clip. Times are taken relative to the reference segment's start.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from streamst.benchmarks.datasets import ReferenceSegment, SpeechInstance

from streamst import metrics
from streamst.languages import Language
from streamst.metrics import Erasure, InstanceTrace, LatencyScores, QualityScore
from streamst.sessions.base import SessionStats
from streamst.types import Event, FinalEvent
from streamst.writing import foreign_letters, wrong_script_letters

log = logging.getLogger("streamst.benchmarks.scoring")


# ---------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class TimedUnit:
    """One committed target unit and when the listener got it."""

    text: str
    delay_ms: float  # source audio consumed when it was committed
    elapsed_ms: float  # delay plus compute so far (simulated) or wall time since the start (wall)


@dataclass(frozen=True)
class OutputSegment:
    """The committed target text of one engine segment, with its source span."""

    units: tuple[TimedUnit, ...]
    start_ms: float  # source span of the segment, on the instance's timeline
    end_ms: float
    source_text: str = ""  # what the engine heard in it (its last event's source text)


@dataclass(frozen=True)
class CallRecord:
    """The state after one push()/finish() call."""

    audio_ms: float  # audio fed to the session so far
    compute_ms: float  # compute time of all calls so far, this one included


def step_counts(outputs: Sequence[StreamOutput]) -> SessionStats | None:
    """The sessions' step counts of a run, summed over its streams; None when no stream has any."""
    counts = [dataclasses.astuple(o.steps) for o in outputs if o.steps is not None]
    return SessionStats(*(sum(column) for column in zip(*counts))) if counts else None


@dataclass(frozen=True)
class StreamOutput:
    """Everything a run of one instance produced that scoring needs."""

    instance_id: str
    segments: tuple[OutputSegment, ...]
    displayed: tuple[tuple[str, ...], ...]  # displayed target units after each event
    compute_ms: float  # total compute time of the instance
    audio_ms: float  # duration of the audio fed
    calls: tuple[CallRecord, ...] = ()  # per call, in order
    wall_clock: bool = False  # elapsed is wall time at 1× (True) or delay + compute (False)
    error: str = ""  # why the run of this instance stopped early; "" when it completed
    committed: tuple[str, ...] = ()  # committed target text after each event (a sequence of characters)
    steps: SessionStats | None = None  # the session's step counts; None when not recorded

    def elapsed_origin_ms(self, start_ms: float) -> float:
        """The elapsed time at which the audio at ``start_ms`` had been fed.

        On the wall clock at 1× that is ``start_ms``; on the simulated clock it is
        ``start_ms`` plus the compute time of the calls made before that audio was fed.
        """
        if start_ms <= 0:
            return 0.0
        if self.wall_clock:
            return start_ms
        fed = [call.audio_ms for call in self.calls]
        n_before = bisect.bisect_left(fed, start_ms)
        compute_before_ms = self.calls[n_before - 1].compute_ms if n_before else 0.0
        return start_ms + compute_before_ms


@dataclass(frozen=True)
class ScoredSegment:
    """One reference segment's trace, with the speech start used for first-commit latency."""

    trace: InstanceTrace
    speech_start_ms: float  # start of the first engine segment scored against it
    # What the engine heard in it (the source its translator saw), else the reference transcript:
    # the names a translation may keep are those of its own source (a name the recogniser spelt
    # "Cintra" for "Sintra" is a recognition error, not untranslated text).
    source_text: str = ""
    heard_text: str = ""  # what the engine heard in it, "" where it heard nothing
    transcript: str = ""  # the reference transcript of the segment


# ---------------------------------------------------------------------------------------
# Events → units


@dataclass
class _OpenSegment:
    units: list[TimedUnit] = field(default_factory=list)
    text: str = ""  # the committed deltas, joined
    claimed: str = ""  # the committed text the last event stated
    tentative: str = ""
    start_ms: float = 0.0
    end_ms: float = 0.0
    source_text: str = ""


class CommitTracker:
    """Collects the committed units and displayed text of one instance from its events."""

    def __init__(self, target: Language) -> None:
        self.target = target
        self._segments: dict[int, _OpenSegment] = {}
        self._displayed: list[tuple[str, ...]] = []
        self._committed: list[str] = []

    def observe(self, events: Iterable[Event], compute_ms: float = 0.0, wall_ms: float | None = None) -> None:
        """Events returned by one call, after ``compute_ms`` of compute in all calls so far
        (simulated clock: elapsed = ``event.audio_ms + compute_ms``), or received ``wall_ms``
        after the instance started (wall clock: elapsed = ``wall_ms``)."""
        for event in events:
            elapsed_ms = wall_ms if wall_ms is not None else event.audio_ms + compute_ms
            self._observe(event, elapsed_ms)

    def _observe(self, event: Event, elapsed_ms: float) -> None:
        segment = self._segments.setdefault(event.segment_id, _OpenSegment())
        segment.text += event.committed_delta
        segment.claimed = event.committed_text
        segment.tentative = "" if isinstance(event, FinalEvent) else event.tentative_text
        segment.start_ms, segment.end_ms = event.start_ms, event.end_ms
        segment.source_text = event.source_text
        elapsed_ms = max(elapsed_ms, float(event.audio_ms))
        self._update_units(segment, float(event.audio_ms), elapsed_ms, event.segment_id)
        self._displayed.append(self._display_units())
        self._committed.append(self._committed_text())

    def _update_units(self, segment: _OpenSegment, delay_ms: float, elapsed_ms: float, segment_id: int) -> None:
        current = metrics.units(segment.text, self.target.code)
        if len(current) < len(segment.units):
            log.warning(
                "segment %d: committed units shrank from %d to %d", segment_id, len(segment.units), len(current)
            )
            del segment.units[len(current) :]
        for i, text in enumerate(current):
            if i >= len(segment.units):
                segment.units.append(TimedUnit(text, delay_ms, elapsed_ms))
            elif segment.units[i].text != text:
                segment.units[i] = TimedUnit(text, delay_ms, elapsed_ms)

    def _display_units(self) -> tuple[str, ...]:
        shown: list[str] = []
        for segment_id in sorted(self._segments):
            segment = self._segments[segment_id]
            shown += metrics.units(segment.text + segment.tentative, self.target.code)
        return tuple(shown)

    def _committed_text(self) -> str:
        """Erasure counts its characters, not units: a word that gains its comma ("Haus" →
        "Haus,") only grows."""
        return "\n".join(self._segments[i].claimed for i in sorted(self._segments))

    def output_segments(self) -> tuple[OutputSegment, ...]:
        """The segments with committed text, in order, times non-decreasing along the output."""
        out = []
        delay_ms = elapsed_ms = 0.0
        for segment_id in sorted(self._segments):
            segment = self._segments[segment_id]
            units = []
            for unit in segment.units:
                delay_ms, elapsed_ms = max(delay_ms, unit.delay_ms), max(elapsed_ms, unit.elapsed_ms)
                units.append(TimedUnit(unit.text, delay_ms, elapsed_ms))
            if units:
                out.append(OutputSegment(tuple(units), segment.start_ms, segment.end_ms, segment.source_text))
        return tuple(out)

    @property
    def displayed(self) -> tuple[tuple[str, ...], ...]:
        """Committed + tentative units on display after each event."""
        return tuple(self._displayed)

    @property
    def committed(self) -> tuple[str, ...]:
        """Committed text after each event, as the events state them (``committed_text``),
        so a session that retracts committed text shows here even though deltas only append."""
        return tuple(self._committed)


# ---------------------------------------------------------------------------------------
# Units → traces per reference segment


def _overlap_ms(a_start: float, a_end: float, b: ReferenceSegment) -> float:
    return min(a_end, b.end_ms) - max(a_start, b.start_ms)


def assign_segments(
    outputs: Sequence[OutputSegment], references: Sequence[ReferenceSegment]
) -> list[list[OutputSegment]]:
    """For each reference segment, the output segments that overlap it most in time.

    An output segment with no overlap goes to the reference segment nearest its midpoint.
    """
    assigned: list[list[OutputSegment]] = [[] for _ in references]
    if not references:
        return assigned
    for output in outputs:
        overlaps = [_overlap_ms(output.start_ms, output.end_ms, ref) for ref in references]
        best = max(range(len(references)), key=lambda i: (overlaps[i], -i))
        if overlaps[best] <= 0:
            middle = (output.start_ms + output.end_ms) / 2
            best = min(
                range(len(references)),
                key=lambda i: abs(middle - (references[i].start_ms + references[i].end_ms) / 2),
            )
        assigned[best].append(output)
    return assigned


def scored_segments(
    output: StreamOutput, instance: SpeechInstance, target: Language, first_index: int
) -> list[ScoredSegment]:
    """One trace per reference segment of ``instance``, indexed from ``first_index``."""
    references = instance.segments
    scored = []
    for offset, (reference, outputs) in enumerate(
        zip(references, assign_segments(output.segments, references), strict=True)
    ):
        start_ms = reference.start_ms
        origin_ms = output.elapsed_origin_ms(start_ms)
        units = [unit for segment in outputs for unit in segment.units]
        trace = InstanceTrace(
            index=first_index + offset,
            prediction_units=tuple(u.text for u in units),
            delays_ms=tuple(max(0.0, u.delay_ms - start_ms) for u in units),
            elapsed_ms=tuple(max(0.0, u.elapsed_ms - origin_ms) for u in units),
            source_length_ms=reference.duration_ms,
            reference=reference.references.get(target.code, ""),
            latency_unit=target.latency_unit,
            source=(instance.source_label if len(references) == 1 else f"{instance.source_label}#{offset}",),
        )
        speech_start_ms = min((s.start_ms for s in outputs), default=start_ms) - start_ms
        heard = " ".join(s.source_text for s in outputs if s.source_text)
        scored.append(
            ScoredSegment(trace, max(0.0, speech_start_ms), heard or reference.source_text, heard, reference.source_text)
        )
    return scored


# ---------------------------------------------------------------------------------------
# Run scores


@dataclass(frozen=True)
class QualityScores:
    """Corpus BLEU and chrF of one system on one pair."""

    bleu: float
    chrf: float
    bleu_signature: str
    chrf_signature: str
    wrong_script: float | None = None  # Latin-free targets: share of letters in Latin words the source lacks
    source_wer: float | None = None  # speech: % word (char, zh/ja) errors of what the engine heard in the source


@dataclass(frozen=True)
class RunScores:
    """Everything measured for one (mode, policy, knob, pair) run, beside its offline reference."""

    mode: str
    policy: str
    knob_name: str
    knob: float
    pair: str  # "en-de"
    clock: str  # "simulated" or "wall"
    n_instances: int  # streams run
    n_segments: int  # reference segments scored
    latency_unit: str  # "word" or "char"
    quality: QualityScores
    offline_quality: QualityScores | None
    bleu_retention: float | None  # streaming BLEU / offline BLEU
    chrf_retention: float | None
    latency: LatencyScores  # non-computation-aware
    latency_ca: LatencyScores  # computation-aware
    first_commit_ms: float | None  # mean over segments, from speech start to first unit
    first_commit_ca_ms: float | None
    normalized_erasure: float  # of the displayed text, committed + tentative
    rtf: float  # compute time / audio time
    offline_rtf: float | None
    instances_log: str  # path of the SimulEval instance log, relative to the output folder
    errors: tuple[str, ...] = ()  # "<instance id>: <error>" for each instance whose run failed
    offline_errors: tuple[str, ...] = ()  # the same for the offline run
    committed_erasure: float = 0.0  # normalized erasure of committed text, in characters; 0 by contract
    steps: SessionStats | None = None  # the sessions' steps, summed over the streams
    label: str = ""  # the name a report gives the folder it came from (`report --label`)

    @property
    def system(self) -> str:
        """``mode/policy``, marked ``(wall 1x)`` for wall-clock runs and with the report's label
        of its folder: one line of the curve."""
        return (
            f"{self.mode}/{self.policy}"
            + (" (wall 1x)" if self.clock == "wall" else "")
            + (f" [{self.label}]" if self.label else "")
        )


def quality_scores(
    hypotheses: Sequence[str], references: Sequence[str], target: Language, sources: Sequence[str] | None = None
) -> QualityScores:
    """BLEU with the target's tokenizer and chrF, via sacrebleu; with the `sources` given, for a
    target in Latin or Chinese/Japanese/Korean script, the share of the hypotheses' letters left
    in the wrong script."""
    bleu: QualityScore = metrics.bleu(hypotheses, references, target.code)
    chrf: QualityScore = metrics.chrf(hypotheses, references)
    wrong = wrong_script_share(hypotheses, sources, target) if sources is not None and foreign_letters(target) else None
    return QualityScores(bleu.score, chrf.score, bleu.signature, chrf.signature, wrong)


def wrong_script_share(hypotheses: Sequence[str], sources: Sequence[str], target: Language) -> float:
    """Letters in a script the target is not written in, over all letters, pooled over the corpus
    (`streamst.writing.wrong_script_letters`); 0 for an empty corpus."""
    counts = [wrong_script_letters(h, s, target) for h, s in zip(hypotheses, sources, strict=True)]
    letters = sum(n for _, n in counts)
    return sum(w for w, _ in counts) / letters if letters else 0.0


def retention(streaming: float, offline: float) -> float | None:
    """``streaming / offline``; None when the offline score is 0."""
    return metrics.quality_retention(streaming, offline) if offline > 0 else None


def hypotheses_of(segments: Sequence[ScoredSegment]) -> list[str]:
    return [s.trace.prediction for s in segments]


def references_of(segments: Sequence[ScoredSegment]) -> list[str]:
    return [s.trace.reference or "" for s in segments]


def sources_of(segments: Sequence[ScoredSegment]) -> list[str]:
    return [s.source_text for s in segments]


def source_wer(segments: Sequence[ScoredSegment], source: Language) -> float | None:
    """Word (or character) error rate of what the engine heard against the reference
    transcripts (`streamst.metrics.source_error_rate`); None without segments."""
    if not segments:
        return None
    return metrics.source_error_rate([s.heard_text for s in segments], [s.transcript for s in segments], source.code)


def mean_first_commit_ms(segments: Sequence[ScoredSegment], computation_aware: bool) -> float | None:
    values = [metrics.first_commit_latency_ms(s.trace, computation_aware, s.speech_start_ms) for s in segments]
    present = [v for v in values if v is not None]
    return float(statistics.mean(present)) if present else None


def corpus_erasure(outputs: Sequence[StreamOutput], committed_only: bool = False) -> Erasure:
    """Erasure of the displayed text, or of the committed text alone (``committed_only``)."""
    return metrics.corpus_erasure(metrics.erasure(o.committed if committed_only else o.displayed) for o in outputs)


def errors_of(outputs: Sequence[StreamOutput]) -> tuple[str, ...]:
    return tuple(f"{o.instance_id}: {o.error}" for o in outputs if o.error)


def real_time_factor(outputs: Sequence[StreamOutput]) -> float:
    return metrics.real_time_factor(sum(o.compute_ms for o in outputs), sum(o.audio_ms for o in outputs))


def pooled_retention(runs: Sequence[RunScores], metric: str = "bleu") -> float | None:
    """Retention of a set of runs (e.g. one system on many pairs): ``Σ streaming / Σ offline``
    over the runs with an offline score above 0, so pairs with a near-zero offline score
    (a handful of sentences) cannot swing it. None when no run has an offline score."""
    scored = [r for r in runs if r.offline_quality is not None and getattr(r.offline_quality, metric) > 0]
    if not scored:
        return None
    streaming = sum(getattr(r.quality, metric) for r in scored)
    offline = sum(getattr(r.offline_quality, metric) for r in scored)
    return streaming / offline
