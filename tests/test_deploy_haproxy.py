"""Two `streamst-server` replicas behind HAProxy with the shipped configuration
(deploy/haproxy/streamst.cfg), all on 127.0.0.1: sessions spread over both replicas, a replica
stopped with SIGTERM delivers every final of its sessions while new sessions go to the other, and
`streamst-mic` reconnects through the balancer.

The replicas run the scripted models (tests/scripted_server.py) so that three processes and a
balancer fit this machine's cores; the balancing, the draining and the protocol are the real ones.
Every wait is bounded (TEST_TIMEOUT_S), and every process started here is stopped by its pid."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scripted import audio_for
from scripted_server import TALK, TALK_MS
from test_server_lifecycle import Client, frames

from streamst import wire
from streamst.audio import write_wav
from streamst.server import balancer
from streamst.server import process as server_process

REPLICA = Path(__file__).resolve().parent / "scripted_server.py"
TEST_TIMEOUT_S = 120.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(balancer.haproxy_path() is None, reason="needs haproxy (apt-get install haproxy; scripts/test.sh installs it)"),
]


@dataclass
class Replica:
    port: int
    process: subprocess.Popen
    log_path: Path

    def sessions(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/status", timeout=5) as response:
            return json.load(response)["sessions"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Cluster:
    replicas: list[Replica]
    lb_port: int
    haproxy: subprocess.Popen

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.lb_port}{wire.STREAM_PATH}"


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextlib.contextmanager
def cluster(tmp_path: Path, translate_s: float = 0.2) -> Iterator[Cluster]:
    """Two ready replicas and HAProxy in front of them, the shipped config with their ports."""
    started: list[subprocess.Popen] = []
    try:
        replicas = []
        for i in (1, 2):
            port, log_path = server_process.free_port(), tmp_path / f"replica{i}.log"
            with open(log_path, "wb") as log_file:
                command = [sys.executable, str(REPLICA), "--port", str(port), "--translate-s", str(translate_s)]
                process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
            started.append(process)
            replicas.append(Replica(port, process, log_path))
        for replica in replicas:
            server_process.wait_ready(replica.port, replica.process, replica.log_path, timeout_s=60)
        lb_port = server_process.free_port()
        ports = [r.port for r in replicas]
        with balancer.running(lb_port, ports, tmp_path / "haproxy.log") as haproxy:
            yield Cluster(replicas, lb_port, haproxy)
    finally:
        for process in reversed(started):
            _stop(process)


def _frames() -> list[bytes]:
    return frames(audio_for(TALK, TALK_MS))


def test_sessions_spread_over_both_replicas_and_a_draining_replica_delivers_every_final(tmp_path):
    with cluster(tmp_path) as lb:
        first, second = lb.replicas

        async def main():
            clients = [Client(lb.url) for _ in range(4)]
            tasks = []
            for client in clients:
                tasks.append(asyncio.create_task(client.run(_frames())))
                await asyncio.wait_for(client.ready.wait(), 30)
            spread = [first.sessions(), second.sessions()]
            await asyncio.sleep(3.0)  # mid-talk: every session has committed text and an open segment
            first.process.send_signal(signal.SIGTERM)
            late = Client(lb.url)  # arrives while the first replica drains
            late_task = asyncio.create_task(late.run(_frames()[:30]))
            await asyncio.wait_for(late.ready.wait(), 30)
            late_on_second = second.sessions()
            await asyncio.wait_for(asyncio.gather(*tasks, late_task), TEST_TIMEOUT_S)
            return clients, spread, late, late_on_second

        clients, spread, late, late_on_second = asyncio.run(main())
        first_exit = first.process.wait(timeout=60)
        log = first.log()

    assert spread == [2, 2], f"leastconn puts two sessions on each replica, got {spread}"
    drained = [c for c in clients if c.of_type("end") and c.of_type("end")[0]["reason"] == "shutdown"]
    assert len(drained) == 2, [c.of_type("end") for c in clients]
    for client in drained:
        finals = [m for m in client.of_type("final") if m["committed_text"]]
        (end,) = client.of_type("end")
        assert finals and "GOOD MORNING" in finals[0]["committed_text"], client.messages
        assert end["n_segments"] == len(client.of_type("final")), "a final of a drained session is missing"
        assert not client.of_type("error") and client.messages[-1] == end
    for client in clients:
        if client not in drained:
            assert client.of_type("end")[0]["reason"] != "shutdown" and not client.of_type("error")
    assert late.of_type("ready") and not late.of_type("error"), late.messages
    assert late_on_second == 3, "the session that arrived during the drain went to the other replica"
    assert first_exit == 0 and "shutting down: finishing 2 open session(s)" in log


def test_the_mic_client_reconnects_through_the_balancer_when_its_replica_stops(tmp_path):
    talk = tmp_path / "talk.wav"
    write_wav(talk, np.concatenate([audio_for(TALK, TALK_MS), np.zeros(16_000, dtype=np.float32)]))
    saved = tmp_path / "out.jsonl"
    with cluster(tmp_path) as lb:
        command = [sys.executable, "-m", "streamst.client.mic", "-s", "en", "-t", "de", "--file", str(talk),
                   "--server", f"ws://127.0.0.1:{lb.lb_port}", "--save", str(saved), "--plain",
                   "--max-reconnect-s", "60", "--stop-timeout-s", "60"]  # fmt: skip
        with open(tmp_path / "mic.err", "wb") as err:
            mic = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 30
            serving = []
            while not serving and time.monotonic() < deadline:
                serving = [r for r in lb.replicas if r.sessions() == 1]
                time.sleep(0.2)
            assert len(serving) == 1, "the mic client's session is on neither replica"
            (first,) = serving
            (other,) = [r for r in lb.replicas if r is not first]
            time.sleep(4.0)  # mid-talk
            first.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            while other.sessions() == 0 and mic.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            reconnected_to_other = other.sessions() == 1
            code = mic.wait(timeout=TEST_TIMEOUT_S)
        finally:
            _stop(mic)
    err_text = (tmp_path / "mic.err").read_text(errors="replace")
    records = [json.loads(line) for line in saved.read_text().splitlines()] if saved.exists() else []
    assert code == 0, err_text
    assert "reconnecting" in err_text, err_text
    assert reconnected_to_other, "the reconnected session is not on the replica still running"
    assert len(records) >= 2, records
    assert records[-1]["end_ms"] > TALK_MS - 3_000, "the talk's end was captioned after the reconnection"
    assert [r["start_ms"] for r in records] == sorted(r["start_ms"] for r in records)
