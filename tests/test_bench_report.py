"""Reports, scores.json and curve.png from synthetic scores."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from streamst.benchmarks import report, results
from streamst.benchmarks.mt import MTScores
from streamst.benchmarks.plot import curve_points, draw_curve
from streamst.benchmarks.scoring import (
    QualityScores,
    RunScores,
    StreamOutput,
    step_counts,
)

from streamst.metrics import LatencyScores
from streamst.sessions.base import SessionStats

BLEU_SIGNATURE = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
CHRF_SIGNATURE = "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def latency(laal_ms: float, computation_aware: bool) -> LatencyScores:
    return LatencyScores(computation_aware, 3, laal_ms, laal_ms, laal_ms * 1.5, 0.7, laal_ms * 1.2, 900.0, -200.0)


def run_scores(policy: str, knob: float, pair: str, laal_ms: float, bleu: float, offline_bleu: float) -> RunScores:
    quality = QualityScores(bleu, 2 * bleu, BLEU_SIGNATURE, CHRF_SIGNATURE)
    offline = QualityScores(offline_bleu, 2 * offline_bleu, BLEU_SIGNATURE, CHRF_SIGNATURE)
    return RunScores(
        mode="cascade",
        policy=policy,
        knob_name="step_ms",
        knob=knob,
        pair=pair,
        clock="simulated",
        n_instances=3,
        n_segments=3,
        latency_unit="char" if pair.endswith("zh") else "word",
        quality=quality,
        offline_quality=offline,
        bleu_retention=bleu / offline_bleu if offline_bleu else None,
        chrf_retention=bleu / offline_bleu if offline_bleu else None,
        latency=latency(laal_ms, False),
        latency_ca=latency(laal_ms + 1500, True),
        first_commit_ms=1200.0,
        first_commit_ca_ms=2100.0,
        normalized_erasure=0.0,
        rtf=0.6,
        offline_rtf=0.3,
        instances_log=f"streaming/cascade-{policy}-step_ms={knob:g}/{pair}/instances.log",
    )


RUNS = (
    run_scores("sentence", 500, "en-de", 2000, 18.0, 20.0),
    run_scores("sentence", 500, "en-zh", 2400, 15.0, 20.0),
    run_scores("sentence", 2000, "en-de", 3000, 19.0, 20.0),
    run_scores("sentence", 2000, "en-zh", 3400, 20.0, 20.0),
    run_scores("segment", 500, "en-de", 4000, 20.0, 20.0),
    run_scores("segment", 500, "en-zh", 4400, 10.0, 0.0),
)
MT = (
    MTScores(
        "flores200-devtest",
        "en-de",
        200,
        QualityScores(9.5, 40.2, BLEU_SIGNATURE, CHRF_SIGNATURE, wrong_script=0.0123),
        6000,
        9000,
        300.0,
        2,
    ),
)


def meta(command: str, clock: str = "simulated") -> results.Meta:
    return results.Meta(
        command,
        "fleurs-mini",
        clock,
        20,
        "Test CPU, 2 cores",
        2,
        "3.11",
        {"sacrebleu": "2.6.0"},
        {"translator": "qwen"},
    )


def test_curve_points_pool_over_pairs() -> None:
    points = curve_points(RUNS)
    assert [(p.system, p.knob_label, p.n_pairs) for p in points] == [
        ("cascade/segment", "step_ms=500", 1),
        ("cascade/sentence", "step_ms=500", 2),
        ("cascade/sentence", "step_ms=2000", 2),
    ]
    assert points[1].laal_s == pytest.approx(2.2)
    assert points[1].laal_ca_s == pytest.approx(3.7)
    assert points[1].retention == pytest.approx((18 + 15) / (20 + 20))
    # The pair whose offline BLEU is 0 has no retention and is left out.
    assert points[0].laal_s == pytest.approx(4.0)


def test_draw_curve_writes_a_png(tmp_path: Path) -> None:
    path = draw_curve(RUNS, tmp_path / "plots" / "curve.png")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_folder_report_has_a_row_per_run() -> None:
    text = report.folder_report(results.BenchResults(meta("streamst-bench run -o out"), runs=RUNS, mt=MT))
    assert "`streamst-bench run -o out`" in text
    for run in RUNS:
        assert f"| {run.system} | step_ms={run.knob:g} | {run.pair} |" in text
    assert "| cascade/sentence | step_ms=500 | en-de | 3 | 18.0 | 20.0 | 90% | 36.0 | 40.0 | 90% | – | – | – | 0 |" in text
    assert "| cascade/segment | step_ms=500 | en-zh | 3 | 10.0 | 0.0 | – |" in text
    assert "| cascade/sentence | step_ms=500 | en-de | word | 2.00 | 3.50 |" in text
    assert "| flores200-devtest | en-de | 200 | 9.5 | 40.2 | 1.2% | 20.0 | 1.50 | 2 |" in text
    assert BLEU_SIGNATURE in text and CHRF_SIGNATURE in text


def test_scores_json_round_trip(tmp_path: Path) -> None:
    bench = results.BenchResults(meta("streamst-bench run -o out"), runs=RUNS, mt=MT)
    path = results.save(bench, tmp_path)
    assert path.name == "scores.json"
    assert results.load(tmp_path) == bench


def test_results_document_lists_commands_machine_and_curve(tmp_path: Path) -> None:
    document = report.ResultsDocument(
        results=(
            results.BenchResults(meta("streamst-bench run -o a"), runs=RUNS),
            results.BenchResults(meta("streamst-bench mt -o b", clock=""), mt=MT),
        ),
        report_command="streamst-bench report a b --results RESULTS.md",
        curve_name="curve.png",
        machine_notes=("shared with other jobs",),
    )
    text = report.results_document(document)
    commands = text.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert commands == [
        "streamst-bench run -o a",
        "streamst-bench mt -o b",
        "streamst-bench report a b --results RESULTS.md",
    ]
    assert "Test CPU, 2 cores" in text and "CA" in text and "shared with other jobs" in text
    assert "![quality retention against LAAL](curve.png)" in text
    assert "| en-zh | cascade/sentence | step_ms=500 | 15.0 / 20.0 | 75% |" in text
    assert "## Translator alone" in text
    assert "simuleval --score-only" in text


def test_summary_and_headline_tables() -> None:
    summary = report.summary_table(RUNS)
    assert "| cascade/sentence | step_ms=500 | 2 | 82% | 82% | 2.20 | 3.70 | 1.20 | 0.60 |" in summary
    assert "| cascade/segment | step_ms=500 | 2 | 100% | 100% | 4.20 |" in summary
    chosen = report.headline_runs(RUNS, {"cascade/sentence": 2000})
    assert [(r.system, r.knob, r.pair) for r in chosen] == [
        ("cascade/sentence", 2000, "en-de"),
        ("cascade/segment", 500, "en-de"),
        ("cascade/sentence", 2000, "en-zh"),
        ("cascade/segment", 500, "en-zh"),
    ]


def test_failed_instances_are_reported() -> None:
    failed = dataclasses.replace(RUNS[0], errors=("fleurs-de-003: ValueError: boom",), offline_errors=())
    text = report.folder_report(results.BenchResults(meta("streamst-bench run -o out"), runs=(failed, *RUNS[1:])))
    assert "| 1 / 0 offline |" in text
    assert "- cascade/sentence step_ms=500 en-de: fleurs-de-003: ValueError: boom" in text
    assert "Failed instances" not in report.folder_report(results.BenchResults(meta("x"), runs=RUNS))


def test_wall_clock_runs_are_their_own_line() -> None:
    wall = dataclasses.replace(RUNS[0], clock="wall")
    assert wall.system == "cascade/sentence (wall 1x)"
    assert {p.system for p in curve_points((wall, RUNS[0]))} == {"cascade/sentence", "cascade/sentence (wall 1x)"}


def test_direct_step_counts_are_summed_reported_and_saved(tmp_path: Path) -> None:
    per_stream = [
        SessionStats(n_steps=10, n_skipped_steps=1, n_prompt_tokens=400, n_prefill_tokens=100, n_fallbacks=0),
        SessionStats(n_steps=10, n_skipped_steps=0, n_prompt_tokens=600, n_prefill_tokens=150, n_fallbacks=1),
    ]
    outputs = [StreamOutput("x", (), (), 1.0, 1.0, steps=s) for s in per_stream] + [StreamOutput("y", (), (), 1.0, 1.0)]
    steps = step_counts(outputs)
    assert steps == SessionStats(n_steps=20, n_skipped_steps=1, n_prompt_tokens=1000, n_prefill_tokens=250, n_fallbacks=1)
    direct = dataclasses.replace(RUNS[0], mode="direct", policy="wait-k", knob_name="k", knob=1, steps=steps)
    text = report.folder_report(results.BenchResults(meta("streamst-bench run"), runs=(direct, RUNS[1])))
    assert "| direct/wait-k | k=1 | en-de | 20 | 1 | 50.0 | 12.5 | 1 |" in text
    results.save(results.BenchResults(meta("streamst-bench run"), runs=(direct,)), tmp_path)
    assert results.load(tmp_path).runs[0].steps == steps
    assert step_counts(outputs[2:]) is None


def test_fastest_table_picks_the_lowest_latency_that_keeps_the_goal() -> None:
    def direct(knob: float, laal_ms: float, bleu: float) -> RunScores:
        run = run_scores("sentence", knob, "en-de", laal_ms, bleu, 20.0)
        return dataclasses.replace(run, mode="direct", policy="wait-k", knob_name="k")

    runs = [direct(1, 1500, 15.0), direct(2, 1800, 18.0), direct(3, 2500, 19.0), RUNS[0], RUNS[2]]
    text = report.fastest_table(runs)
    # k=1 is faster but keeps 75% < 85%; k=2 keeps 90%. The cascade's fastest is step_ms=500.
    assert "| en-de | wait-k k=2 | 1.80 | 90% | 90% | 0.00 | sentence step_ms=500 | 2.00 | 90% | -0.20 |" in text
    only_poor = report.fastest_table([direct(1, 1500, 15.0), direct(2, 1600, 12.0)])
    assert "wait-k k=1 (misses the goal)" in only_poor
    assert report.fastest_table(RUNS) == ""  # no direct runs
