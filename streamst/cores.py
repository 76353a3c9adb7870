"""One thread budget for the process: model calls never run more threads than there are cores.

llama.cpp and CTranslate2 keep their threads spinning at a barrier between operations. When those
threads do not each own a core (two calls with 2 threads each on 2 cores, or one call beside a
busy process) a call can take 5-10 times longer instead of twice as long. So the budget is: at
most `MODELS_AT_ONCE` model calls run at once (the speech encoder for one stream beside the
translator for another; each model serves one call at a time), and each gets
`cores // MODELS_AT_ONCE` threads. On 2 cores that is one thread per call: under outside load a
call slows in proportion, it does not collapse.

With the decoder on a completion server (`--translator-url`) only the speech encoder runs here, one
call at a time (`SPEECH_CALLS`); the other calls wait on the server's answer, so more of them may be
open at once (`REMOTE_WAITING_CALLS`) without a thread more on the local cores. When the server runs
on the same machine its threads count too: give it what the encoder leaves (`llama-server -t 1` on
2 cores)."""

from __future__ import annotations

import os
import threading

from streamst.errors import OptionsError

MODELS_AT_ONCE = 2  # the speech encoder and the translator can each serve a call at the same time
REMOTE_WAITING_CALLS = 4  # with a remote decoder: calls that may wait on it beside the one encoding

# One speech-encoder call at a time in this process, whichever encoder (Whisper, SenseVoice) it is;
# the translator serialises its own calls (streamst.translators.greedy).
SPEECH_CALLS = threading.Lock()


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads(cores: int | None = None) -> int:
    """Threads per model call that keep `MODELS_AT_ONCE` calls within the cores."""
    return max(1, (cores or available_cores()) // MODELS_AT_ONCE)


def default_concurrency(n_threads: int | None = None, cores: int | None = None, remote_translator: bool = False) -> int:
    """Model calls at once that keep calls of `n_threads` (default: `default_threads`) within the
    cores (at least 1); with a `remote_translator`, one encoding and `REMOTE_WAITING_CALLS` waiting."""
    if remote_translator:
        return 1 + REMOTE_WAITING_CALLS
    cores = cores or available_cores()
    return max(1, min(MODELS_AT_ONCE, cores // (n_threads or default_threads(cores))))


def check_budget(n_threads: int, concurrency: int, cores: int | None = None, remote_translator: bool = False) -> None:
    """Refuses a configuration whose model calls would run more threads than there are cores (with
    a `remote_translator`, only the encoder's calls run here, one at a time)."""
    cores = cores or available_cores()
    n_local = 1 if remote_translator else min(concurrency, MODELS_AT_ONCE)
    n_busy = n_threads * n_local
    if n_busy > cores:
        raise OptionsError(
            f"{n_local} model calls at once with {n_threads} threads each would run "
            f"{n_busy} threads on {cores} cores; their spinning threads would slow every call many times over. "
            f"Use --threads {default_threads(cores)} and --model-concurrency {default_concurrency(default_threads(cores), cores)}"
            f" (the defaults here), or fewer"
        )
