"""A benchmark: every (mode, policy, knob) on every pair, streamed and scored, plus the offline
reference per pair, with a SimulEval instance log per run.

Output folder::

    streaming/<mode>-<policy>-<knob>=<value>/<pair>/instances.log, config.yaml
    offline/<pair>/instances.log, config.yaml
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from streamst.benchmarks.datasets import Pair, SpeechInstance
from streamst.benchmarks.offline import offline_instance
from streamst.benchmarks.runner import RunSpec, StreamSettings, stream_instance
from streamst.benchmarks.scoring import (
    QualityScores,
    RunScores,
    ScoredSegment,
    StreamOutput,
    corpus_erasure,
    errors_of,
    hypotheses_of,
    mean_first_commit_ms,
    quality_scores,
    real_time_factor,
    references_of,
    retention,
    scored_segments,
    source_wer,
    sources_of,
    step_counts,
)

from streamst.engine import Engine
from streamst.instance_log import write_simuleval_output
from streamst.metrics import corpus_latency
from streamst.sessions.base import Components

log = logging.getLogger("streamst.benchmarks.suite")

STREAMING_DIR = "streaming"
OFFLINE_DIR = "offline"


@dataclass(frozen=True)
class SuitePlan:
    runs: tuple[RunSpec, ...]  # streaming configurations, each on one pair
    instances: dict[str, list[SpeechInstance]]  # pair name → instances
    settings: StreamSettings
    offline: bool = True  # also run the offline reference of each pair

    @property
    def pairs(self) -> list[Pair]:
        seen: dict[str, Pair] = {}
        for run in self.runs:
            seen.setdefault(run.pair.name, run.pair)
        return list(seen.values())

    @property
    def n_steps(self) -> int:
        """Instances to process: one per run and instance, plus one per offline instance."""
        n_streams = sum(len(self.instances[run.pair.name]) for run in self.runs)
        n_offline = sum(len(self.instances[p.name]) for p in self.pairs) if self.offline else 0
        return n_streams + n_offline


@dataclass(frozen=True)
class _Scored:
    segments: list[ScoredSegment]
    quality: QualityScores
    outputs: list[StreamOutput]


def _score_outputs(
    instances: Sequence[SpeechInstance], outputs: Sequence[StreamOutput], pair: Pair, log_dir: Path
) -> _Scored:
    segments: list[ScoredSegment] = []
    for instance, output in zip(instances, outputs, strict=True):
        segments += scored_segments(output, instance, pair.target, len(segments))
    write_simuleval_output(log_dir, [s.trace for s in segments])
    quality = quality_scores(hypotheses_of(segments), references_of(segments), pair.target, sources_of(segments))
    quality = replace(quality, source_wer=source_wer(segments, pair.source))
    return _Scored(segments, quality, list(outputs))


def run_suite(
    engine: Engine,
    plan: SuitePlan,
    output_dir: str | Path,
    on_step: Callable[[str], None] | None = None,
    on_run: Callable[[tuple[RunScores, ...]], None] | None = None,
) -> tuple[RunScores, ...]:
    """Run ``plan``; writes the instance logs under ``output_dir`` and returns the scores.

    ``on_step(label)`` is called after every instance, ``on_run(scores so far)`` after every run.
    """
    output_dir = Path(output_dir)
    step = on_step or (lambda _label: None)
    offline: dict[str, _Scored] = {}
    if plan.offline:
        components = engine.load()
        for pair in plan.pairs:
            instances = plan.instances[pair.name]
            outputs = []
            for instance in instances:
                outputs.append(_offline_or_error(components, instance, pair))
                step(f"offline {pair.name}")
            offline[pair.name] = _score_outputs(instances, outputs, pair, output_dir / OFFLINE_DIR / pair.name)
    scores = []
    for run in plan.runs:
        instances = plan.instances[run.pair.name]
        outputs = []
        for instance in instances:
            outputs.append(stream_instance(engine, instance, run, plan.settings))
            step(f"{run.name} {run.pair.name}")
        log_dir = output_dir / STREAMING_DIR / run.name / run.pair.name
        streamed = _score_outputs(instances, outputs, run.pair, log_dir)
        scores.append(_run_scores(run, plan.settings, streamed, offline.get(run.pair.name), log_dir, output_dir))
        if on_run is not None:
            on_run(tuple(scores))
    return tuple(scores)


def _offline_or_error(components: Components, instance: SpeechInstance, pair: Pair) -> StreamOutput:
    """The offline run of one instance; a failing model call gives an empty output with the error."""
    try:
        return offline_instance(components, instance, pair)
    except Exception as e:  # noqa: BLE001 - a failing engine call must not end the whole benchmark
        error = f"{type(e).__name__}: {e}"
        log.error("offline %s %s failed: %s", pair.name, instance.id, error)
        return StreamOutput(instance.id, (), (), 0.0, instance.duration_ms, error=error)


def _run_scores(
    run: RunSpec,
    settings: StreamSettings,
    streamed: _Scored,
    offline: _Scored | None,
    log_dir: Path,
    output_dir: Path,
) -> RunScores:
    traces = [s.trace for s in streamed.segments]
    quality = streamed.quality
    offline_quality = offline.quality if offline else None
    return RunScores(
        mode=run.mode,
        policy=run.policy,
        knob_name=run.spec.knob.name,
        knob=run.knob,
        pair=run.pair.name,
        clock=settings.clock,
        n_instances=len(streamed.outputs),
        n_segments=len(traces),
        latency_unit=run.pair.target.latency_unit,
        quality=quality,
        offline_quality=offline_quality,
        bleu_retention=retention(quality.bleu, offline_quality.bleu) if offline_quality else None,
        chrf_retention=retention(quality.chrf, offline_quality.chrf) if offline_quality else None,
        latency=corpus_latency(traces, computation_aware=False),
        latency_ca=corpus_latency(traces, computation_aware=True),
        first_commit_ms=mean_first_commit_ms(streamed.segments, computation_aware=False),
        first_commit_ca_ms=mean_first_commit_ms(streamed.segments, computation_aware=True),
        normalized_erasure=corpus_erasure(streamed.outputs).normalized,
        rtf=real_time_factor(streamed.outputs),
        offline_rtf=real_time_factor(offline.outputs) if offline else None,
        instances_log=str((log_dir / "instances.log").relative_to(output_dir)),
        errors=errors_of(streamed.outputs),
        offline_errors=errors_of(offline.outputs) if offline else (),
        committed_erasure=corpus_erasure(streamed.outputs, committed_only=True).normalized,
        steps=step_counts(streamed.outputs),
    )
