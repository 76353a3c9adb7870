"""llama.cpp's `llama-server` as a child process on 127.0.0.1: the decoder that `--translator-url`
points at, for the scale-out benchmark and the tests.

The binary is the one `scripts/build_llama_server.sh` builds from the llama.cpp sources vendored in
the pinned llama-cpp-python sdist: `$STREAMST_HOME/bin/llama-server-<version>`, or the path in
`$STREAMST_LLAMA_SERVER`. It serves `n_slots` streams at once with continuous batching, each slot
with a context of its own, and keeps each slot's prompt cached, so a stream's next request only
evaluates what its prompt added. It evaluates as the in-process decoder does (no flash attention,
the same batch size), so the two translate alike."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streamst.errors import OptionsError
from streamst.registry import home
from streamst.server.process import stop, wait_for_health
from streamst.translators.llama_cpp import LlamaOptions

LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # the sdist whose vendored llama.cpp the binary is built from
BINARY_ENV = "STREAMST_LLAMA_SERVER"
BUILD_COMMAND = "scripts/build_llama_server.sh"
READY_POLL_S = 0.25


@dataclass(frozen=True)
class LlamaServerOptions:
    n_threads: int = 1  # decode and prefill threads (on a small machine, what the encoder leaves)
    n_slots: int = 4  # streams decoded at once (--parallel); more requests wait for a free slot
    ctx_per_slot_tokens: int = 2048  # context of each slot, as the in-process decoder's n_ctx
    alias: str = "qwen"  # the model name it serves (--translator-api-model)
    n_batch_tokens: int = LlamaOptions().n_batch  # tokens evaluated per batch, as in-process

    def __post_init__(self) -> None:
        if self.n_threads < 1 or self.n_slots < 1 or self.ctx_per_slot_tokens < 256:
            raise OptionsError(
                f"llama-server needs at least 1 thread, 1 slot and 256 tokens per slot, got {self.n_threads}, "
                f"{self.n_slots} and {self.ctx_per_slot_tokens}"
            )


def binary_path() -> Path | None:
    """The llama-server binary: $STREAMST_LLAMA_SERVER, else the cached build; None when neither exists."""
    given = os.environ.get(BINARY_ENV)
    path = Path(given) if given else home() / "bin" / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def require_binary() -> Path:
    path = binary_path()
    if path is None:
        raise OptionsError(
            f"llama-server is not built: run {BUILD_COMMAND} (about 10 minutes on 2 cores), "
            f"or set ${BINARY_ENV} to a llama-server binary"
        )
    return path


def command(model_path: Path, port: int, options: LlamaServerOptions) -> list[str]:
    """The llama-server command line: loopback, `n_slots` slots with continuous batching, a unified
    KV cache of `n_slots * ctx_per_slot_tokens`, prompt caching (its default), /metrics on."""
    return [
        str(require_binary()),
        "--model", str(model_path),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--threads", str(options.n_threads),
        "--threads-batch", str(options.n_threads),
        "--parallel", str(options.n_slots),
        "--ctx-size", str(options.n_slots * options.ctx_per_slot_tokens),
        "--cont-batching",
        # As the in-process decoder evaluates (streamst.translators.llama_cpp): no flash attention,
        # batches of 256 tokens, so that both give the same logits as far as llama.cpp allows.
        "--flash-attn", "off",
        "--batch-size", str(options.n_batch_tokens),
        "--ubatch-size", str(options.n_batch_tokens),
        "--alias", options.alias,
        "--metrics",
        "--no-webui",
    ]  # fmt: skip


def start(model_path: Path, port: int, log_path: Path, options: LlamaServerOptions = LlamaServerOptions()) -> subprocess.Popen:
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(command(model_path, port, options), stdout=log_file, stderr=subprocess.STDOUT)


def wait_ready(port: int, process: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    """Waits until /health answers 200 (the model is loaded)."""
    wait_for_health("llama-server", f"http://127.0.0.1:{port}/health", process, log_path, timeout_s, READY_POLL_S)


@contextlib.contextmanager
def running(
    model_path: Path, port: int, log_path: Path, options: LlamaServerOptions = LlamaServerOptions(),
    ready_timeout_s: float = 120.0,
) -> Iterator[subprocess.Popen]:  # fmt: skip
    """A ready llama-server for the duration of the block; stopped (SIGTERM, then SIGKILL) afterwards."""
    process = start(model_path, port, log_path, options)
    try:
        wait_ready(port, process, log_path, ready_timeout_s)
        yield process
    finally:
        stop(process, timeout_s=10)


def api_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1"
