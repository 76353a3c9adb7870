"""`streamst-bench scaleout` without starting anything: its argument errors, a missing llama-server
said with the command that builds it, the report's table, and llama-server's /metrics parsed."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_bench_cli import data_dir, one_line_error  # noqa: F401 (data_dir is a fixture)

from streamst.benchmarks import load, scaleout
from streamst.benchmarks.datasets import parse_pairs
from streamst.server import llama_server
from streamst.server.process import free_port


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if a command got as far as starting a process."""

    def refuse(*args, **kwargs):
        raise AssertionError("a process was started")

    monkeypatch.setattr("streamst.server.process.start", refuse)
    monkeypatch.setattr("streamst.server.llama_server.start", refuse)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--clients", "0"], "argument --clients: '0' must be at least 1"),
        (["--duration-s", "-1"], "--duration-s: -1 is not positive"),
        (["--decoder-threads", "0"], "must be at least 1"),
    ],
)
def test_scaleout_argument_errors(capsys, tmp_path, data_dir, args, message) -> None:
    err = one_line_error(capsys, ["scaleout", *args, "--data-dir", str(data_dir), "-o", str(tmp_path / "out")])
    assert message in err


def test_without_llama_server_it_says_how_to_build_it(capsys, tmp_path, data_dir, monkeypatch) -> None:
    monkeypatch.setenv("STREAMST_HOME", str(tmp_path))
    monkeypatch.delenv(llama_server.BINARY_ENV, raising=False)
    err = one_line_error(capsys, ["scaleout", "--data-dir", str(data_dir), "-o", str(tmp_path / "out")])
    assert "llama-server is not built" in err and "scripts/build_llama_server.sh" in err


def _report(n_clients: int, client: int, kept_up: bool) -> load.ClientReport:
    return load.ClientReport(n_clients, client, 3, 2100.0, 3200.0, 1500.0, 4.0, 1.0 if kept_up else 9.0, kept_up, "-", 30.0)


def test_the_report_has_each_client_the_replicas_sessions_and_the_decoders_throughput(tmp_path) -> None:
    plan = scaleout.ScaleoutPlan(parse_pairs("en-zh")[0], (1, 2), 60.0, tmp_path)
    decoder = scaleout.DecoderThroughput(n_prompt_tokens=600, n_generated_tokens=300, busy_s=45.0, wall_s=60.0)
    results = [
        scaleout.LevelResult(scaleout.SCALEOUT, 1, (_report(1, 0, True),), (1, 0), decoder),
        scaleout.LevelResult(scaleout.SCALEOUT, 2, (_report(2, 0, True), _report(2, 1, False)), (1, 1), decoder),
        scaleout.LevelResult(scaleout.IN_PROCESS, 1, (_report(1, 0, True),), (1,), None),
    ]
    text = scaleout.format_report(plan, results)
    assert "1 + 1" in text and "10.0" in text and "5.0" in text and "0.75" in text
    assert "2 replicas + llama-server: largest N where every client kept up with real time: 1" in text
    assert "1 server, in-process: largest N where every client kept up with real time: 1" in text
    scaleout.save_json(results, tmp_path / "s.json")
    assert (tmp_path / "s.json").read_text().count('"setup"') == 3


def test_decoder_metrics_reads_llama_servers_counters() -> None:
    body = (
        b"# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed\n"
        b"# TYPE llamacpp:prompt_tokens_total counter\nllamacpp:prompt_tokens_total 83\n"
        b"llamacpp:tokens_predicted_total 47\nllamacpp:prompt_seconds_total 1.20191\n"
    )

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    port = free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        values = scaleout.decoder_metrics(port)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert values == {"prompt_tokens_total": 83.0, "tokens_predicted_total": 47.0, "prompt_seconds_total": 1.20191}


def test_llama_server_command_matches_the_in_process_evaluation() -> None:
    if llama_server.binary_path() is None:
        pytest.skip(f"llama-server is not built ({llama_server.BUILD_COMMAND})")
    command = llama_server.command(Path("m.gguf"), 8080, llama_server.LlamaServerOptions(n_slots=3))
    joined = " ".join(command)
    assert "--host 127.0.0.1" in joined and "--parallel 3" in joined and "--ctx-size 6144" in joined
    assert "--flash-attn off" in joined and "--batch-size 256" in joined
