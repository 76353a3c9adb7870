"""`streamst-bench` argument errors: exit code 2 and one line on stderr, before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamst.benchmarks import cli, results
from streamst.benchmarks.cli import main, run_specs
from streamst.benchmarks.datasets import parse_pairs
from test_bench_report import MT, RUNS, meta


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A FLEURS-mini manifest with one English clip (no audio: nothing gets that far)."""
    folder = tmp_path / "data" / "fleurs-mini"
    folder.mkdir(parents=True)
    line = {"id": "c", "src_lang": "en", "audio": "c.wav", "duration_s": 1.0, "source_text": "Hi.",
            "references": {"en": "Hi.", "de": "Hallo."}}  # fmt: skip
    (folder / "manifest.jsonl").write_text(json.dumps(line) + "\n", encoding="utf-8")
    return tmp_path / "data"


@pytest.fixture(autouse=True)
def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if a command got as far as loading models."""

    def refuse(self):
        raise AssertionError("models were loaded")

    monkeypatch.setattr("streamst.engine.Engine.load", refuse)


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("streamst-bench: error: ")
    return err


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--pairs", "en-xx"], "unknown pair 'en-xx'"),
        (["run", "--pairs", "en-ja"], "unknown pair en-ja for this dataset"),
        (["run", "--pairs", "en-de", "--modes", "telepathy"], "unknown mode 'telepathy'"),
        (["run", "--pairs", "en-de", "--policies", "sentence"], "unknown policy 'sentence'"),
        (["run", "--pairs", "en-de", "--modes", "cascade", "--policies", "wait-k"], "unknown policy 'wait-k'"),
        (["run", "--pairs", "en-de", "--knobs", "fast"], "knob 'fast' is not a number"),
        (["run", "--pairs", "en-de", "--knobs", "1"], "knob 1 does not suit direct/la"),
        (["run", "--pairs", "en-de", "--modes", "cascade", "--knobs", "50"], "knob 50 does not suit cascade/sentence"),
        (["run", "--pairs", "en-de", "--clock", "sundial"], "invalid choice: 'sundial'"),
        (["run", "--pairs", "en-de", "--limit", "0"], "must be at least 1"),
        (["run", "--pairs", "en-de", "--dataset", "librispeech"], "invalid choice"),
    ],
)
def test_run_argument_errors(capsys, tmp_path: Path, data_dir: Path, args: list[str], message: str) -> None:
    err = one_line_error(capsys, [*args, "--data-dir", str(data_dir), "-o", str(tmp_path / "out")])
    assert message in err


def test_missing_output_is_a_usage_error(capsys) -> None:
    assert "--output" in one_line_error(capsys, ["run", "--pairs", "en-de"])


def test_missing_dataset(capsys, tmp_path: Path) -> None:
    err = one_line_error(capsys, ["run", "--pairs", "en-de", "--data-dir", str(tmp_path), "-o", str(tmp_path / "o")])
    assert "FLEURS-mini not found" in err and "--data-dir" in err
    err = one_line_error(capsys, ["mt", "--pairs", "en-de", "--data-dir", str(tmp_path), "-o", str(tmp_path / "o")])
    assert "FLORES-200 devtest not found" in err


def test_no_command(capsys) -> None:
    assert "required" in one_line_error(capsys, [])


def test_report_of_a_missing_folder(capsys, tmp_path: Path) -> None:
    err = one_line_error(capsys, ["report", str(tmp_path / "nothing"), "--results", str(tmp_path / "R.md")])
    assert "no scores.json" in err


def test_report_writes_results_and_curve(tmp_path: Path) -> None:
    results.save(results.BenchResults(meta("streamst-bench run -o a"), runs=RUNS), tmp_path / "a")
    results.save(results.BenchResults(meta("streamst-bench mt -o b", clock=""), mt=MT), tmp_path / "b")
    target = tmp_path / "docs" / "RESULTS.md"
    argv = ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--results", str(target), "--note", "busy"]
    assert main(argv) == 0
    text = target.read_text(encoding="utf-8")
    assert (tmp_path / "docs" / "curve.png").stat().st_size > 0
    assert "](curve.png)" in text and "- busy" in text
    assert f"streamst-bench report {tmp_path / 'a'}" in text


def test_report_labels_tell_folders_with_the_same_settings_apart(capsys, tmp_path: Path) -> None:
    for name in ("before", "after"):
        results.save(results.BenchResults(meta(f"streamst-bench mt -o {name}", clock=""), mt=MT), tmp_path / name)
    target = tmp_path / "R.md"
    folders = [str(tmp_path / "before"), str(tmp_path / "after")]
    assert main(["report", *folders, "--results", str(target), "--label", "today", "--label", "fidelity"]) == 0
    text = target.read_text(encoding="utf-8")
    assert f"| {MT[0].dataset} [today] | {MT[0].pair} |" in text and f"| {MT[0].dataset} [fidelity] |" in text
    capsys.readouterr()
    err = one_line_error(capsys, ["report", *folders, "--results", str(target), "--label", "today"])
    assert "one --label per folder" in err


def test_run_specs_cover_every_combination() -> None:
    pairs = parse_pairs("en-de,de-en")
    specs = run_specs("cascade", "sentence,segment", "500,1000", pairs)
    assert len(specs) == 2 * 2 * 2
    assert {s.name for s in specs} == {
        "cascade-sentence-step_ms=500", "cascade-sentence-step_ms=1000",
        "cascade-segment-min_silence_ms=500", "cascade-segment-min_silence_ms=1000",
    }  # fmt: skip
    default = run_specs("cascade", None, None, pairs[:1])
    assert [(s.policy, s.knob) for s in default] == [("sentence", 1000)]


def test_help_lists_the_subcommands(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("run", "mt", "report"))
    assert cli.PROG in out


def test_mt_shows_examples_then_the_sentences_before_with_their_translations() -> None:
    from scripted import ScriptedTranslator
    from streamst.benchmarks.datasets import TextPair
    from streamst.benchmarks.mt import translate_corpus

    translator = ScriptedTranslator()
    sentences = [TextPair(i, text, text.upper()) for i, text in enumerate(("one.", "two.", "three."))]
    example = ("an example.", "EIN BEISPIEL.")
    out = translate_corpus(translator, "flores200-devtest", parse_pairs("en-de")[0], sentences, None, [example], 1)
    assert out.hypotheses == ("ONE.", "TWO.", "THREE.")
    assert [c.earlier for c in translator.calls] == [
        (example,),
        (example, ("one.", "ONE.")),
        (example, ("two.", "TWO.")),
    ]


@pytest.mark.parametrize("args, message", [
    (["--context", "-1"], "must be at least 0"),
    (["--few-shot", "2", "--dataset", "wmt22"], "draws its examples from wmt22"),
])  # fmt: skip
def test_mt_context_argument_errors(capsys, tmp_path: Path, args: list[str], message: str) -> None:
    assert main(["mt", "-o", str(tmp_path / "out"), *args]) == 2
    assert message in capsys.readouterr().err
