"""`streamst-bench run` end to end on one real FLEURS clip with the real default models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamst.benchmarks.cli import main

from streamst.instance_log import read_instance_log

pytestmark = pytest.mark.models


def test_run_one_clip_writes_sane_scores(fleurs, tmp_path: Path) -> None:
    output = tmp_path / "out"
    args = ["run", "--pairs", "en-de", "--modes", "cascade", "--limit", "1", "--no-progress", "--threads", "1"]
    assert main([*args, "-o", str(output)]) == 0
    for name in ("scores.json", "report.md", "curve.png"):
        assert (output / name).stat().st_size > 0, name
    (run,) = json.loads((output / "scores.json").read_text(encoding="utf-8"))["runs"]
    duration_ms = fleurs["fleurs-en-000"]["duration_s"] * 1000
    assert run["pair"] == "en-de" and run["n_segments"] == 1
    assert run["quality"]["chrf"] > 20 and run["offline_quality"]["chrf"] > 20
    assert run["chrf_retention"] > 0.5
    assert 0 < run["latency"]["laal_ms"] <= duration_ms + 1000
    assert run["latency_ca"]["laal_ms"] >= run["latency"]["laal_ms"]
    assert run["rtf"] > 0 and run["normalized_erasure"] == 0
    (trace,) = read_instance_log(output / run["instances_log"], "word")
    assert trace.source_length_ms == pytest.approx(duration_ms)
    assert all(e >= d for d, e in zip(trace.delays_ms, trace.elapsed_ms, strict=True))
    assert (output / "offline" / "en-de" / "instances.log").exists()
    assert "| cascade/sentence | step_ms=1000 | en-de |" in (output / "report.md").read_text(encoding="utf-8")
