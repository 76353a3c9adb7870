"""`streamst-server` as a child process on 127.0.0.1: for the load benchmark and end-to-end tests."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

READY_POLL_S = 0.5
STOP_TIMEOUT_S = 120.0


class ServerStartError(RuntimeError):
    """The server exited or did not become ready; the message ends with its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: int, log_path: Path, *options: str) -> subprocess.Popen:
    """Starts `streamst-server --port PORT --funasr-port 0 OPTIONS…`, its output in `log_path`."""
    command = [sys.executable, "-m", "streamst.server.cli", "--port", str(port), "--funasr-port", "0", *options]
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)


def wait_ready(port: int, process: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    """Waits until /readyz answers 200 (the models are loaded)."""
    wait_for_health("streamst-server", f"http://127.0.0.1:{port}/readyz", process, log_path, timeout_s)


def wait_for_health(
    name: str, url: str, process: subprocess.Popen, log_path: Path, timeout_s: float, poll_s: float = READY_POLL_S
) -> None:
    """Waits until `url` answers 200; raises ServerStartError, with the end of the log, if the
    process `name` exits first or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerStartError(f"{name} exited with {process.returncode}:\n{_tail(log_path)}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(poll_s)
    raise ServerStartError(f"{name} was not ready within {timeout_s:g} s:\n{_tail(log_path)}")


def stop(process: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM (open segments are finished), then SIGKILL if it does not exit in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running(port: int, log_path: Path, *options: str, ready_timeout_s: float = 180.0) -> Iterator[subprocess.Popen]:
    """A ready server for the duration of the block; stopped afterwards if still running."""
    process = start(port, log_path, *options)
    try:
        wait_ready(port, process, log_path, ready_timeout_s)
        yield process
    finally:
        stop(process)


def _tail(log_path: Path, n_chars: int = 3000) -> str:
    return log_path.read_text(errors="replace")[-n_chars:] if log_path.exists() else ""
