"""The FunASR-compatible endpoint: FunASR's clients connect unchanged and show translations.

A client sends its configuration as JSON (`mode`, `wav_name`, `is_speaking`, `audio_fs`, ...), then
PCM16 frames, then `{"is_speaking": false}`; see `funasr_messages` for what it is sent back. The
languages come from the server's defaults, or from `source_lang` / `target_lang` in the first
message. This endpoint is lenient where FunASR's servers are: audio before the configuration uses
the defaults, a sample split across frames is joined, and a RIFF header before the PCM is skipped."""

from __future__ import annotations

import json
import logging

from streamst.audio import pcm16_to_float32
from streamst.server import funasr_messages as messages
from streamst.server import policies
from streamst.server.connection import STOPPED, Ending, StreamConnection
from streamst.server.funasr_messages import FunasrConfig, FunasrRenderer
from streamst.types import Event
from streamst.wire import SAMPLE_RATES_HZ, ErrorCode, ProtocolError, check_frame

log = logging.getLogger("streamst.server.funasr")

SUBPROTOCOL = "binary"


class FunasrConnection(StreamConnection):
    endpoint = "funasr"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._config: FunasrConfig | None = None
        self._renderer: FunasrRenderer | None = None
        self._pcm = messages.PcmReader()

    async def on_text(self, text: str) -> None:
        data = messages.parse_json(text)
        if self._config is None:
            await self._open(messages.parse_config(data))
        if messages.is_end_of_speech(data):
            self.end(STOPPED)

    async def on_audio(self, data: bytes) -> None:
        if self._config is None:
            await self._open(FunasrConfig())
        check_frame(len(data) - len(data) % 2, "pcm16", self.limits.max_frame_bytes)
        pcm = self._pcm.read(data)
        if pcm:
            self.feed(pcm16_to_float32(pcm))

    def render(self, event: Event) -> list[str]:
        assert self._renderer is not None
        return [_json(m) for m in self._renderer.render(event)]

    def closing_texts(self, ending: Ending) -> list[str]:
        renderer = self._renderer or self._make_renderer(self._config or FunasrConfig(), space_separated=True)
        messages = renderer.error(ending.error) if ending.error is not None else renderer.end()
        return [_json(m) for m in messages]

    async def _open(self, config: FunasrConfig) -> None:
        if config.audio_fs not in SAMPLE_RATES_HZ:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_SAMPLE_RATE,
                f"audio_fs {config.audio_fs} is not supported; use one of {', '.join(map(str, SAMPLE_RATES_HZ))}",
            )
        defaults = self.app.config
        source, target = self.app.check_languages(
            config.source or defaults.funasr_source, config.target or defaults.funasr_target
        )
        self._config = config
        self._renderer = self._make_renderer(config, space_separated=target.latency_unit == "word")
        offline = config.mode == "offline"
        realtime = self.app.config.realtime and not offline
        choice = policies.choose(self.app.config.default_mode, None, None, None, realtime=realtime)
        session = await self.app.open_session(source.code, target.code, choice)
        self.start_pipeline(session, config.audio_fs, self.limits.max_offline_backlog_ms if offline else None)
        self.log.event(
            "start",
            source=source.code,
            target=target.code,
            funasr_mode=config.mode,
            mode=choice.mode,
            wav_name=config.wav_name,
            sample_rate_hz=config.audio_fs,
        )

    def _make_renderer(self, config: FunasrConfig, space_separated: bool) -> FunasrRenderer:
        return FunasrRenderer(config.mode, config.wav_name, space_separated)


def _json(message: dict) -> str:
    return json.dumps(message, ensure_ascii=False)
