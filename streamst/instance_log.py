"""SimulEval-format instance logs, so third-party scorers can rescore streamst runs.

One JSON object per line, with the fields and types SimulEval 1.1.4 writes for a
speech-to-text instance::

    {"index": 0, "prediction": "a b c", "delays": [640.0, ...], "elapsed": [702.5, ...],
     "prediction_length": 3, "reference": "...", "source": ["clip.wav"],
     "source_length": 5120.0}

``prediction`` joins word units with spaces and character units with nothing, as
SimulEval's ``--eval-latency-unit word|char`` does. A directory holding ``instances.log``
and ``config.yaml`` (see :func:`write_simuleval_output`) is rescored with::

    simuleval --score-only --output DIR --eval-latency-unit word|char
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from streamst.metrics import InstanceTrace, LatencyUnit, units

INSTANCES_LOG_NAME = "instances.log"
CONFIG_NAME = "config.yaml"
SIMULEVAL_LATENCY_METRICS = ("AL", "LAAL", "AP", "DAL", "ATD", "StartOffset", "EndOffset")
"""The SimulEval latency columns streamst computes (see :mod:`streamst.metrics`)."""


def instance_record(trace: InstanceTrace) -> dict[str, Any]:
    """The JSON object SimulEval writes for one speech-to-text instance, keys in its order."""
    return {
        "index": trace.index,
        "prediction": trace.prediction,
        "delays": list(trace.delays_ms),
        "elapsed": list(trace.elapsed_ms),
        "prediction_length": len(trace.prediction_units),
        "reference": trace.reference,
        "source": list(trace.source),
        "source_length": trace.source_length_ms,
    }


def write_instance_log(path: str | Path, traces: Iterable[InstanceTrace]) -> int:
    """Write one JSON line per trace to ``path``; returns the number written.

    Indices must be unique: SimulEval keys instances by index.
    """
    seen: set[int] = set()
    with open(path, "w", encoding="utf-8") as f:
        for trace in traces:
            if trace.index in seen:
                raise ValueError(
                    f"Instance index {trace.index} appears twice; indices must be unique."
                )
            seen.add(trace.index)
            f.write(json.dumps(instance_record(trace)) + "\n")
    return len(seen)


def write_simuleval_output(
    output_dir: str | Path,
    traces: Iterable[InstanceTrace],
    source_type: str = "speech",
    target_type: str = "text",
) -> Path:
    """Write ``instances.log`` and ``config.yaml`` into ``output_dir`` (created if needed).

    ``simuleval --score-only --output output_dir`` reads both. Index the traces from 0:
    SimulEval's ATD looks at instance 0 to tell the input type. Returns the log's path.
    """
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_NAME).write_text(
        f"source_type: {source_type}\ntarget_type: {target_type}\n", encoding="utf-8"
    )
    log_path = directory / INSTANCES_LOG_NAME
    write_instance_log(log_path, traces)
    return log_path


def simuleval_score_command(
    output_dir: str | Path,
    latency_unit: LatencyUnit,
    sacrebleu_tokenizer: str = "13a",
    computation_aware: bool = False,
) -> list[str]:
    """The ``simuleval --score-only`` command line that rescores ``output_dir``.

    SimulEval 1.1.4 computes its plain AL and LAAL columns on ``elapsed`` when
    ``--computation-aware`` is given; only its ``*_CA`` columns are right then.
    """
    command = [
        "simuleval",
        "--score-only",
        "--output",
        str(output_dir),
        "--eval-latency-unit",
        latency_unit,
        "--sacrebleu-tokenizer",
        sacrebleu_tokenizer,
        "--latency-metrics",
        *SIMULEVAL_LATENCY_METRICS,
    ]
    if computation_aware:
        command.append("--computation-aware")
    return command


def _prediction_units(prediction: str, latency_unit: LatencyUnit) -> list[str]:
    """Split a logged prediction the way it was joined (see :func:`instance_record`)."""
    return units(prediction, "zh" if latency_unit == "char" else "en")


def _trace_from_record(record: dict[str, Any], latency_unit: LatencyUnit) -> InstanceTrace:
    source = record.get("source", [])
    return InstanceTrace(
        index=int(record["index"]),
        prediction_units=tuple(_prediction_units(record["prediction"], latency_unit)),
        delays_ms=tuple(record["delays"]),
        elapsed_ms=tuple(record.get("elapsed") or ()),
        source_length_ms=record["source_length"],
        reference=record.get("reference", ""),
        latency_unit=latency_unit,
        source=(source,) if isinstance(source, str) else tuple(str(s) for s in source),
    )


def read_instance_log(path: str | Path, latency_unit: LatencyUnit = "word") -> list[InstanceTrace]:
    """Read a SimulEval speech-to-text ``instances.log`` written with ``latency_unit``.

    A missing ``reference`` reads as ``""``, as SimulEval reads it.
    """
    traces = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                traces.append(_trace_from_record(json.loads(line), latency_unit))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(
                    f"{path}:{line_number}: not a SimulEval speech-to-text instance "
                    f"with {latency_unit} units ({e})."
                ) from e
    return traces
