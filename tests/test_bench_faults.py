"""`streamst-bench faults` and `soak` without a server: their argument errors."""

from __future__ import annotations

import pytest
from streamst.benchmarks.cli import main
from test_bench_cli import data_dir, one_line_error  # noqa: F401 (data_dir is a fixture)
from test_bench_load import no_server  # noqa: F401 (an autouse fixture: no server may start)

ERRORS = [
    (["faults", "--cases", "0"], "argument --cases: '0' is not a case; choose from 1, 2, 3, 4, 5, 6"),
    (["faults", "--cases", "1,7"], "'7' is not a case"),
    (["faults", "--cases", "one"], "'one' is not a case"),
    (["faults", "--cases", ","], "give at least one case"),
    (["faults", "--cases", "1,6"], "case 6 runs FunASR's own client: give"),
    (["faults", "--funasr-client", "/no/such/client.py"], "argument --funasr-client: /no/such/client.py is not a file"),
    (["soak", "--duration-s", "0"], "argument --duration-s: 0 s leaves no memory sample after the first minute"),
    (["soak", "--duration-s", "60"], "give more than 60"),
    (["soak", "--clients", "0"], "argument --clients: '0' must be at least 1"),
    (["soak", "--clients", "two"], "'two' is not a whole number"),
    (["soak", "--mode", "telepathy"], "invalid choice: 'telepathy'"),
    (["soak", "--target", "xx"], "unknown pair 'en-xx'"),
]


@pytest.mark.parametrize("args, message", ERRORS)
def test_argument_errors(capsys, tmp_path, data_dir, args: list[str], message: str) -> None:
    err = one_line_error(capsys, [*args, "--data-dir", str(data_dir), "-o", str(tmp_path / "out")])
    assert message in err


@pytest.mark.parametrize("command", [["faults", "--cases", "4"], ["soak"]])
def test_without_data_or_output(capsys, tmp_path, command: list[str]) -> None:
    assert "--output" in one_line_error(capsys, command[:1])
    err = one_line_error(capsys, [*command, "--data-dir", str(tmp_path), "-o", str(tmp_path / "out")])
    assert "FLEURS-mini not found" in err and "--data-dir" in err


@pytest.mark.parametrize(
    "command, options",
    [("faults", ("--cases", "--funasr-client", "--output")), ("soak", ("--duration-s", "--clients", "--output"))],
)
def test_help(capsys, command: str, options: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(option in out for option in options)
