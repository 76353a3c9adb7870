"""The thread budget: model calls at once × threads per call never exceed the cores."""

from __future__ import annotations

import pytest

from streamst.cores import (
    MODELS_AT_ONCE,
    REMOTE_WAITING_CALLS,
    available_cores,
    check_budget,
    default_concurrency,
    default_threads,
)
from streamst.engine import EngineConfig
from streamst.errors import OptionsError


@pytest.mark.parametrize(("cores", "threads", "concurrency"), [(1, 1, 1), (2, 1, 2), (3, 1, 2), (8, 4, 2), (16, 8, 2)])
def test_the_defaults_fill_the_cores_without_sharing_one(cores: int, threads: int, concurrency: int) -> None:
    assert default_threads(cores) == threads
    assert default_concurrency(cores=cores) == concurrency
    assert threads * min(concurrency, MODELS_AT_ONCE) <= cores
    check_budget(threads, concurrency, cores)


def test_more_threads_than_cores_are_refused_with_the_settings_that_fit() -> None:
    with pytest.raises(OptionsError, match=r"4 threads on 2 cores.*--threads 1 and --model-concurrency 2"):
        check_budget(2, 2, cores=2)
    check_budget(2, 1, cores=2)  # one call at a time may use both cores
    check_budget(1, 8, cores=2)  # more calls in flight still run at most one per model


def test_the_engine_takes_its_share_of_this_machine() -> None:
    assert EngineConfig().n_threads == default_threads(available_cores())


def test_with_a_remote_decoder_only_the_encoder_counts_and_more_calls_may_wait_on_it() -> None:
    """The translator's calls wait on a completion server: they hold no local core."""
    assert default_concurrency(remote_translator=True) == 1 + REMOTE_WAITING_CALLS
    check_budget(n_threads=2, concurrency=5, cores=2, remote_translator=True)  # one encoding with 2 threads fits
    with pytest.raises(OptionsError, match="would run 4 threads on 2 cores"):
        check_budget(n_threads=2, concurrency=5, cores=2)
    with pytest.raises(OptionsError):
        check_budget(n_threads=3, concurrency=5, cores=2, remote_translator=True)
