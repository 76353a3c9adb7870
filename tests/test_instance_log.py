"""SimulEval-format instance logs, and our latency figures against `simuleval --score-only`."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from streamst.instance_log import (
    SIMULEVAL_LATENCY_METRICS,
    instance_record,
    read_instance_log,
    simuleval_score_command,
    write_instance_log,
    write_simuleval_output,
)
from streamst.metrics import InstanceTrace, bleu, corpus_latency, units

SIMULEVAL_FIELDS = [
    "index",
    "prediction",
    "delays",
    "elapsed",
    "prediction_length",
    "reference",
    "source",
    "source_length",
]


def _random_trace(index: int, seed: int, n_units: int, reference: str) -> InstanceTrace:
    """Non-round delays that start early and end after the source, with compute time."""
    rng = random.Random(seed)
    source_ms = 2000.0 + rng.uniform(0, 1500)
    delays, elapsed, delay, overhead = [], [], rng.uniform(100, 900), 0.0
    for _ in range(n_units):
        delay = min(delay + rng.choice([0.0, rng.uniform(150, 900)]), source_ms + 250.5)
        overhead += rng.uniform(5, 120)
        delays.append(delay)
        elapsed.append(delay + overhead)
    words = tuple(f"w{i}" for i in range(n_units))
    return InstanceTrace(
        index,
        words,
        tuple(delays),
        tuple(elapsed),
        source_ms,
        reference,
        source=(f"clip{index}.wav",),
    )


def word_traces() -> list[InstanceTrace]:
    return [
        InstanceTrace(
            0,
            ("a", "b", "c", "d"),
            (500, 1000, 1500, 2500),
            (600, 1200, 1800, 2900),
            2000,
            "w x y",
            source=("a.wav",),
        ),
        # First delay beyond the source length.
        InstanceTrace(1, ("a", "b"), (3000, 3000), (3100, 3200), 2000, "w x y"),
        # Prediction longer than the reference, units sharing delays.
        InstanceTrace(
            2,
            tuple("abcdef"),
            (0, 0, 1000, 1000, 2000, 2000),
            (10, 20, 1040, 1050, 2100, 2400),
            2000,
            "a b",
        ),
        # Empty prediction: SimulEval skips it.
        InstanceTrace(3, (), (), (), 1500, "nothing was said"),
        # No delay reaches the end of the source.
        InstanceTrace(4, ("x", "y"), (500, 1000), (530, 1090), 2000, "x y z q"),
        _random_trace(5, seed=11, n_units=20, reference=" ".join(f"w{i}" for i in range(10))),
        _random_trace(6, seed=12, n_units=7, reference="a b c d e f g h i j k l m n"),
    ]


def char_traces() -> list[InstanceTrace]:
    def trace(
        index: int, text: str, delays: tuple[float, ...], source_ms: float, reference: str
    ) -> InstanceTrace:
        elapsed = tuple(d + 35.5 * (i + 1) for i, d in enumerate(delays))
        return InstanceTrace(
            index,
            tuple(units(text, "zh")),
            delays,
            elapsed,
            source_ms,
            reference,
            latency_unit="char",
        )

    return [
        trace(0, "你好，世界", (400, 800, 800, 1200, 1600), 1600, "你好 世界。"),
        trace(1, "今天天气很好", (900, 900, 1450.5, 2000, 2600, 2600), 2400.25, "今天天气不错。"),
        trace(2, "谢谢", (3000, 3100), 2500, "谢谢你。"),
    ]


# ---------------------------------------------------------------------------------------
# Writing and reading


def test_record_fields_and_types() -> None:
    record = instance_record(word_traces()[0])
    assert list(record) == SIMULEVAL_FIELDS
    assert record["prediction"] == "a b c d"
    assert record["delays"] == [500.0, 1000.0, 1500.0, 2500.0]
    assert all(isinstance(d, float) for d in record["delays"] + record["elapsed"])
    assert record["prediction_length"] == 4 and isinstance(record["index"], int)
    assert record["source"] == ["a.wav"] and record["source_length"] == 2000.0
    assert instance_record(char_traces()[0])["prediction"] == "你好，世界"


def test_round_trip(tmp_path: Path) -> None:
    for traces, unit in ((word_traces(), "word"), (char_traces(), "char")):
        path = tmp_path / f"{unit}.log"
        assert write_instance_log(path, traces) == len(traces)
        lines = path.read_text(encoding="utf-8").splitlines()
        assert [json.loads(line)["index"] for line in lines] == [t.index for t in traces]
        assert read_instance_log(path, unit) == traces


def test_no_reference_round_trips_as_null(tmp_path: Path) -> None:
    trace = InstanceTrace(0, ("a",), (100,), (), 1000, None)
    path = tmp_path / "instances.log"
    write_instance_log(path, [trace])
    assert json.loads(path.read_text())["reference"] is None
    assert read_instance_log(path) == [trace]


def test_duplicate_index_and_bad_line(tmp_path: Path) -> None:
    trace = word_traces()[0]
    with pytest.raises(ValueError, match="twice"):
        write_instance_log(tmp_path / "a.log", [trace, trace])
    bad = tmp_path / "bad.log"
    bad.write_text('{"index": 0, "prediction": "a b", "delays": [1.0]}\n')
    with pytest.raises(ValueError, match="bad.log:1"):
        read_instance_log(bad)


def test_output_dir_has_config(tmp_path: Path) -> None:
    log_path = write_simuleval_output(tmp_path / "run", word_traces())
    assert log_path.name == "instances.log"
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert config == "source_type: speech\ntarget_type: text\n"
    command = simuleval_score_command(tmp_path / "run", "char", "zh")
    assert command[:2] == ["simuleval", "--score-only"]
    assert command[command.index("--eval-latency-unit") + 1] == "char"


# ---------------------------------------------------------------------------------------
# Against SimulEval 1.1.4

# The body of `simuleval.cli.scoring` without its 3-decimal rounding, run once per
# argument list: prints {quality and latency column: unrounded value} per run.
_SCORE_SCRIPT = """
import json, sys
from simuleval import options
from simuleval.evaluator import SentenceLevelEvaluator
results = []
for argv in json.loads(sys.argv[1]):
    sys.argv = ["simuleval"] + argv
    parser = options.general_parser()
    options.add_evaluator_args(parser)
    options.add_scorer_args(parser)
    options.add_dataloader_args(parser)
    evaluator = SentenceLevelEvaluator.from_args(parser.parse_args())
    results.append({**evaluator.quality, **evaluator.latency})
print(json.dumps(results))
"""

TOLERANCE = 1e-6


def _score_args(output_dir: Path, unit: str, tokenizer: str, *extra: str) -> list[str]:
    return simuleval_score_command(output_dir, unit, tokenizer)[1:] + ["--no-progress-bar", *extra]


@pytest.fixture(scope="module")
def simuleval_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, float]]:
    pytest.importorskip(
        "simuleval",
        reason="simuleval is not installed (pip install --no-deps simuleval==1.1.4 textgrid "
        "&& pip install pandas requests tornado)",
    )
    root = tmp_path_factory.mktemp("simuleval")
    runs = {
        "word": _score_args(root / "word", "word", "13a"),
        "word_ca": _score_args(root / "word_ca", "word", "13a", "--computation-aware"),
        "char": _score_args(root / "char", "char", "zh"),
        "char_ca": _score_args(root / "char_ca", "char", "zh", "--computation-aware"),
    }
    for name in runs:
        traces = char_traces() if name.startswith("char") else word_traces()
        write_simuleval_output(root / name, traces)
    completed = subprocess.run(
        [sys.executable, "-c", _SCORE_SCRIPT, json.dumps(list(runs.values()))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return dict(zip(runs, json.loads(completed.stdout.strip().splitlines()[-1]), strict=True))


def _assert_columns_match(ours: dict[str, float | None], theirs: dict[str, float]) -> None:
    for column, value in ours.items():
        assert value is not None
        assert abs(value - theirs[column]) <= TOLERANCE, (column, value, theirs[column])


@pytest.mark.parametrize("unit", ["word", "char"])
def test_latency_equals_simuleval(unit: str, simuleval_runs: dict) -> None:
    traces = word_traces() if unit == "word" else char_traces()
    ours = corpus_latency(traces).as_simuleval()
    assert set(ours) == set(SIMULEVAL_LATENCY_METRICS)
    _assert_columns_match(ours, simuleval_runs[unit])


@pytest.mark.parametrize("unit", ["word", "char"])
def test_computation_aware_equals_simuleval_ca_columns(unit: str, simuleval_runs: dict) -> None:
    # Only the *_CA columns: 1.1.4 also scores its plain columns on elapsed with the flag.
    traces = word_traces() if unit == "word" else char_traces()
    ours = corpus_latency(traces, computation_aware=True).as_simuleval()
    _assert_columns_match(ours, simuleval_runs[f"{unit}_ca"])


def test_bleu_equals_simuleval(simuleval_runs: dict) -> None:
    for unit, lang in (("word", "en"), ("char", "zh")):
        traces = word_traces() if unit == "word" else char_traces()
        ours = bleu([t.prediction for t in traces], [t.reference for t in traces], lang)
        assert ours.score == pytest.approx(simuleval_runs[unit]["BLEU"], abs=TOLERANCE)


def test_simuleval_console_script(tmp_path: Path) -> None:
    """The real `simuleval --score-only` command, whose table is rounded to 3 decimals."""
    pytest.importorskip("simuleval", reason="simuleval is not installed")
    script = Path(sys.executable).with_name("simuleval")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "simuleval.cli"]
    write_simuleval_output(tmp_path, word_traces())
    completed = subprocess.run(
        command + _score_args(tmp_path, "word", "13a"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    header, values = completed.stdout.strip().splitlines()[-2:]
    table = dict(zip(header.split(), (float(v) for v in values.split()[1:]), strict=True))
    for column, value in corpus_latency(word_traces()).as_simuleval().items():
        assert table[column] == pytest.approx(value, abs=5e-4 + TOLERANCE), column
