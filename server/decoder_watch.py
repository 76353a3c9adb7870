"""Whether a decoder on another server (`--translator-url`) answers, for `/readyz` and admission.

Once the models are loaded, the decoder is probed every `interval_s` (one GET of its model list
with short timeouts, off the event loop), so a replica whose llama-server or vLLM stopped
answering stops taking new sessions and its readiness probe says why, and takes them again once
it answers. An in-process decoder is never probed: it always answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from streamst.errors import TranslatorUnavailableError
from streamst.translators.base import Translator

log = logging.getLogger("streamst.server.decoder_watch")

PROBE_INTERVAL_S = 2.0  # as often as a Kubernetes readiness probe in deploy/k8s asks


class DecoderWatch:
    def __init__(self, translator: Callable[[], Translator | None], interval_s: float = PROBE_INTERVAL_S) -> None:
        """`translator()`: the loaded translator, or None while the models are not loaded."""
        self._translator = translator
        self.interval_s = interval_s
        self.problem: str | None = None  # why the decoder cannot serve now; None while it answers
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="decoder-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def probe(self) -> None:
        """Checks the decoder once now (nothing while the models are not loaded)."""
        translator = self._translator()
        if translator is None:
            return
        try:
            await asyncio.to_thread(translator.check_reachable)
        except TranslatorUnavailableError as e:
            if self.problem is None:
                log.warning("the decoder does not answer; new sessions are refused until it does: %s", e)
            self.problem = str(e)
        else:
            if self.problem is not None:
                log.info("the decoder answers again; new sessions are admitted")
            self.problem = None

    async def _watch(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(self.interval_s)
