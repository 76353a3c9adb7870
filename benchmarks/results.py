"""``scores.json``: the scores of one benchmark command, with how and where they were made."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from streamst.benchmarks.datasets import DatasetError
from streamst.benchmarks.mt import MTScores
from streamst.benchmarks.scoring import QualityScores, RunScores

from streamst.metrics import LatencyScores
from streamst.sessions.base import SessionStats

SCORES_NAME = "scores.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Meta:
    """How a set of scores was produced."""

    command: str  # the exact command line
    dataset: str
    clock: str  # "simulated", "wall", or "" for the translator alone
    chunk_ms: int
    machine: str  # CPU model and core count
    n_cpus: int
    python: str
    packages: dict[str, str]  # distribution → version
    models: dict[str, str]  # role → registry name
    revision: str = ""  # `git describe --always --dirty` of the source tree, "" outside a checkout


@dataclass(frozen=True)
class BenchResults:
    meta: Meta
    runs: tuple[RunScores, ...] = ()
    mt: tuple[MTScores, ...] = ()


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(["streamst-bench", *argv])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


PACKAGES = ("streamst", "sacrebleu", "faster-whisper", "ctranslate2", "llama_cpp_python", "onnxruntime")


def source_revision() -> str:
    """The commit the code ran from, ``-dirty`` when the tree had uncommitted changes."""
    repo = Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def make_meta(argv: Sequence[str], dataset: str, clock: str, chunk_ms: int, models: dict[str, str]) -> Meta:
    n_cpus = available_cpus()
    return Meta(
        command=command_line(argv),
        dataset=dataset,
        clock=clock,
        chunk_ms=chunk_ms,
        machine=f"{cpu_model()}, {n_cpus} cores",
        n_cpus=n_cpus,
        python=sys.version.split()[0],
        packages=package_versions(),
        models=models,
        revision=source_revision(),
    )


# ---------------------------------------------------------------------------------------
# JSON


def _run_to_json(run: RunScores) -> dict[str, Any]:
    record = dataclasses.asdict(run)
    record["system"] = run.system
    return record


def _mt_to_json(scores: MTScores) -> dict[str, Any]:
    record = dataclasses.asdict(scores)
    record["tokens_per_s"] = scores.tokens_per_s
    record["mean_sentence_s"] = scores.mean_sentence_s
    return record


def _run_from_json(record: dict[str, Any]) -> RunScores:
    fields = {f.name for f in dataclasses.fields(RunScores)}
    values = {k: v for k, v in record.items() if k in fields}
    values["quality"] = QualityScores(**record["quality"])
    offline = record.get("offline_quality")
    values["offline_quality"] = QualityScores(**offline) if offline else None
    values["latency"] = LatencyScores(**record["latency"])
    values["latency_ca"] = LatencyScores(**record["latency_ca"])
    values["errors"] = tuple(record.get("errors", ()))
    values["offline_errors"] = tuple(record.get("offline_errors", ()))
    values["steps"] = SessionStats(**record["steps"]) if record.get("steps") else None
    return RunScores(**values)


def _mt_from_json(record: dict[str, Any]) -> MTScores:
    fields = {f.name for f in dataclasses.fields(MTScores)}
    values = {k: v for k, v in record.items() if k in fields}
    values["quality"] = QualityScores(**record["quality"])
    return MTScores(**values)


def save(results: BenchResults, output_dir: str | Path) -> Path:
    """Write ``scores.json`` into ``output_dir``; returns its path."""
    path = Path(output_dir) / SCORES_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "format_version": FORMAT_VERSION,
        "meta": dataclasses.asdict(results.meta),
        "runs": [_run_to_json(r) for r in results.runs],
        "mt": [_mt_to_json(m) for m in results.mt],
    }
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load(output_dir: str | Path) -> BenchResults:
    """Read ``scores.json`` from an output folder (or the file itself)."""
    path = Path(output_dir)
    if path.is_dir():
        path = path / SCORES_NAME
    if not path.exists():
        raise DatasetError(f"no {SCORES_NAME} at {path}; run `streamst-bench run` or `streamst-bench mt` first")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return BenchResults(
            meta=Meta(**record["meta"]),
            runs=tuple(_run_from_json(r) for r in record.get("runs", ())),
            mt=tuple(_mt_from_json(m) for m in record.get("mt", ())),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{path} is not a streamst-bench {SCORES_NAME} ({e!r}); regenerate it") from e
