"""`streamst-bench compare`: two run folders, instance by instance (no models)."""

from __future__ import annotations

import json
from pathlib import Path

from streamst.benchmarks.cli import main
from streamst.benchmarks.compare import compare_folders


def write_log(folder: Path, records: list[dict], run: str = "direct-la-n=2", pair: str = "en-de") -> None:
    path = folder / "streaming" / run / pair / "instances.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def record(index: int, prediction: str, delays: list[float], elapsed: list[float]) -> dict:
    return {"index": index, "prediction": prediction, "delays": delays, "elapsed": elapsed}


def test_same_text_and_delays_are_the_same_whatever_the_compute(tmp_path: Path, capsys) -> None:
    write_log(tmp_path / "a", [record(0, "Hallo Welt", [500, 900], [700, 1500])])
    write_log(tmp_path / "b", [record(0, "Hallo Welt", [500, 900], [650, 1200])])
    assert compare_folders(tmp_path / "a", tmp_path / "b").same
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "1 instance logs, 1 instances compared: same committed text and delays" in capsys.readouterr().out


def test_a_changed_prediction_or_delay_is_listed(tmp_path: Path, capsys) -> None:
    write_log(tmp_path / "a", [record(0, "Hallo Welt", [500, 900], []), record(1, "Ja", [300], [])])
    write_log(tmp_path / "b", [record(0, "Hallo Welten", [500, 900], []), record(1, "Ja", [400], [])])
    write_log(tmp_path / "b", [record(0, "x", [1], [])], pair="de-en")
    comparison = compare_folders(tmp_path / "a", tmp_path / "b")
    assert [(d.index, d.field) for d in comparison.diffs] == [(0, "prediction"), (1, "delays")]
    assert comparison.only_new == ("streaming/direct-la-n=2/de-en/instances.log",)
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert '#0 prediction:\n  old: "Hallo Welt"\n  new: "Hallo Welten"' in out


def test_folders_without_shared_logs_are_a_usage_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "a").mkdir()
    write_log(tmp_path / "b", [record(0, "x", [1], [])])
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "share no instance log" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "nowhere"), str(tmp_path / "b")]) == 2
