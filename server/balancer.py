"""HAProxy with the shipped configuration (deploy/haproxy/streamst.cfg) as a child process on
127.0.0.1, in front of two `streamst-server` replicas: for the scale-out benchmark and the tests.

The configuration is used as shipped; its `${STREAMST_BIND}` and `${STREAMST_REPLICA_n}` come from
HAProxy's environment. It lives in the source tree (deploy/), not in the installed package: run
these from a checkout."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from streamst.errors import OptionsError
from streamst.server.process import ServerStartError, stop

CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "haproxy" / "streamst.cfg"
N_REPLICAS = 2  # the `server` lines in the shipped configuration
HEALTH_RISE_S = 2.5  # checks every second, two good ones bring a replica up (the config's `rise 2`)


def haproxy_path() -> Path | None:
    found = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)
    return Path(found) if found else None


def http_status(port: int, path: str) -> int:
    """The status of GET http://127.0.0.1:PORT/PATH; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


@contextlib.contextmanager
def running(port: int, replica_ports: Sequence[int], log_path: Path, ready_timeout_s: float = 30.0) -> Iterator[subprocess.Popen]:
    """HAProxy on 127.0.0.1:`port` balancing over the replicas (already ready), until the block ends;
    it yields once /readyz answers through it and both replicas have passed their health checks."""
    binary = haproxy_path()
    if binary is None:
        raise OptionsError("haproxy is not installed: apt-get install haproxy")
    if not CONFIG.is_file():
        raise OptionsError(f"{CONFIG} is missing: run this from a streamst checkout")
    if len(replica_ports) != N_REPLICAS:
        raise OptionsError(f"the shipped HAProxy configuration has {N_REPLICAS} replicas, got {len(replica_ports)}")
    env = os.environ | {"STREAMST_BIND": f"127.0.0.1:{port}"}
    env |= {f"STREAMST_REPLICA_{i}": f"127.0.0.1:{p}" for i, p in enumerate(replica_ports, start=1)}
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([str(binary), "-db", "-f", str(CONFIG)], env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while http_status(port, "/readyz") != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise ServerStartError(f"HAProxy did not forward /readyz:\n{log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        time.sleep(HEALTH_RISE_S)
        yield process
    finally:
        stop(process, timeout_s=10)
