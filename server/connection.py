"""The life of one WebSocket connection, common to every protocol the server speaks.

Three tasks per connection: the receive task reads frames and feeds audio to the stream's pipeline,
the pipeline's worker runs the models, and the send task writes what the outbox holds. Whichever
ends the session first (the client's stop, an error, the idle timeout, a limit, the server's
shutdown, a dropped connection) settles one `Ending`; the connection then finishes the open segments
when the ending calls for it, sends the last messages, and closes with the ending's close code."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from streamst.errors import StreamstError
from streamst.server.logs import SessionLog
from streamst.server.outbox import Item, Outbox
from streamst.server.pipeline import BacklogFull, StreamPipeline
from streamst.types import Event, FinalEvent
from streamst.wire import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    ErrorCode,
    ProtocolError,
    close_code,
)

if TYPE_CHECKING:
    from streamst.server.app import App

log = logging.getLogger("streamst.server.connection")

FINISH_S_PER_BACKLOG_S = 4.0  # finishing may take this long per second of audio still waiting
CLOSE_REASON_MAX_BYTES = 123  # what a close frame's reason may hold, UTF-8 encoded


@dataclass(frozen=True)
class Ending:
    """How a session ends."""

    reason: str  # "stop", "error", "shutdown" or "disconnected"
    finish: bool  # close the open segments and send their finals first
    error: ProtocolError | None = None
    close_code: int = CLOSE_NORMAL


STOPPED = Ending("stop", finish=True)
DISCONNECTED = Ending("disconnected", finish=False)
SHUTDOWN = Ending("shutdown", finish=True, close_code=CLOSE_GOING_AWAY)


def error_ending(error: ProtocolError, finish: bool = False) -> Ending:
    return Ending("error", finish=finish, error=error, close_code=close_code(error.code))


class StreamConnection(ABC):
    """One client connection carrying (at most) one stream. Subclasses speak a protocol."""

    endpoint: str = ""

    def __init__(self, websocket: ServerConnection, app: App, session_id: str) -> None:
        self.ws = websocket
        self.app = app
        self.limits = app.limits
        self.session_id = session_id
        self.log = SessionLog(session_id, self.endpoint, _peer(websocket))
        self.outbox = Outbox(self.limits.max_pending_messages, self._too_slow)
        self.pipeline: StreamPipeline | None = None
        loop = asyncio.get_running_loop()
        self._ending: asyncio.Future[Ending] = loop.create_future()
        self._first_commit_s: float | None = None
        self._opened_s = loop.time()
        self._last_audio_s = self._opened_s  # loop time of the last audio samples received

    # protocol hooks -----------------------------------------------------------------------------

    @abstractmethod
    async def on_text(self, text: str) -> None:
        """A text frame arrived. Raise ProtocolError to end the session with that error."""

    @abstractmethod
    async def on_audio(self, data: bytes) -> None:
        """A binary frame arrived. Raise ProtocolError to end the session with that error."""

    @abstractmethod
    def render(self, event: Event) -> list[str]:
        """The text frames that carry an engine event in this protocol (possibly none)."""

    @abstractmethod
    def closing_texts(self, ending: Ending) -> list[str]:
        """The last text frames of the session (error, end acknowledgement)."""

    # lifecycle ----------------------------------------------------------------------------------

    async def run(self) -> None:
        self.log.event("open", subprotocol=self.ws.subprotocol or "-")
        sender = asyncio.create_task(self._send_loop(), name=f"send-{self.session_id}")
        receiver = asyncio.create_task(self._receive_loop(), name=f"receive-{self.session_id}")
        watcher = asyncio.create_task(self._watch_shutdown(), name=f"shutdown-{self.session_id}")
        ending = DISCONNECTED
        try:
            ending = await self._ending
            await self._close(ending, sender)
        finally:
            for task in (sender, receiver, watcher):
                task.cancel()
            if self.pipeline is not None:
                self.pipeline.cancel()
            self.on_closed()
            self._log_end(ending)

    def end(self, ending: Ending) -> None:
        """Settles how the session ends; the first call wins."""
        if not self._ending.done():
            self._ending.set_result(ending)

    @property
    def ended(self) -> bool:
        return self._ending.done()

    def on_closed(self) -> None:
        """The connection is over, however it ended (a hook for what it holds beyond its pipeline)."""

    def start_pipeline(
        self,
        session,
        sample_rate_hz: int,
        max_backlog_ms: int | None = None,
        on_events: Callable[[list[Event]], None] | None = None,
        meter: Callable[[float], None] | None = None,
    ) -> StreamPipeline:
        """Runs `session` on this connection's audio; its events go to `on_events` (default: this
        client), and `meter` is told the seconds of each of its model calls."""
        pipeline = StreamPipeline(
            session,
            self.app.scheduler,
            sample_rate_hz,
            max_backlog_ms or self.limits.max_backlog_ms,
            self.limits.max_batch_ms,
            on_events or self._on_events,
            meter,
        )
        pipeline.start().add_done_callback(self._pipeline_done)
        self.pipeline = pipeline
        return pipeline

    def feed(self, audio) -> None:
        """Passes client audio (float32 at the client's rate) to the pipeline, enforcing the limits."""
        if self.pipeline is None or self.ended:
            return
        if audio.size:
            self._last_audio_s = asyncio.get_running_loop().time()
        try:
            self.pipeline.feed(audio)
        except BacklogFull as e:
            self.end(error_ending(ProtocolError(ErrorCode.OVERLOADED, str(e))))
            return
        if self.pipeline.fed_ms > self.limits.max_session_s * 1000:
            message = (
                f"this session reached the server's limit of {self.limits.max_session_s:g} s of audio; "
                "open a new session to go on"
            )
            self.end(error_ending(ProtocolError(ErrorCode.SESSION_TOO_LONG, message), finish=True))

    # tasks --------------------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        """Reads every frame until the connection closes. Once the session's end is decided the
        frames are read and dropped: a client that goes on sending must not fill the socket's
        queue, or its pongs would go unread and the keepalive would cut the last finals off."""
        try:
            while True:
                try:
                    async with asyncio.timeout_at(None if self.ended else self._deadline()):
                        message = await self.ws.recv()
                except TimeoutError:
                    self.end(self._deadline_ending())
                    continue
                except ConnectionClosed:
                    self.end(DISCONNECTED)
                    return
                if self.ended:
                    continue
                try:
                    if isinstance(message, bytes):
                        await self.on_audio(message)
                    else:
                        await self.on_text(message)
                except ProtocolError as e:
                    self.end(error_ending(e))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session %s: receive task failed", self.session_id)
            self.end(self._internal_error())

    def _deadline(self) -> float:
        """Loop time at which the session ends unless audio arrives: the idle timeout counts from
        the last audio (empty frames and text do not count), and no session outlives max_lifetime_s."""
        idle_s = max(self._opened_s, self._last_audio_s) + self.limits.idle_timeout_s
        return min(idle_s, self._opened_s + self.limits.max_lifetime_s)

    def _deadline_ending(self) -> Ending:
        if asyncio.get_running_loop().time() >= self._opened_s + self.limits.max_lifetime_s:
            message = (
                f"this session reached the server's limit of {self.limits.max_lifetime_s:g} s; "
                "open a new session to go on"
            )
            return error_ending(ProtocolError(ErrorCode.SESSION_TOO_LONG, message), finish=True)
        return self._idle_ending()

    async def _send_loop(self) -> None:
        try:
            while (item := await self.outbox.get()) is not None:
                for text in self._render_item(item):
                    await self.ws.send(text)
        except ConnectionClosed:
            self.end(DISCONNECTED)
        except Exception:
            log.exception("session %s: send task failed", self.session_id)
            self.end(self._internal_error())

    async def _watch_shutdown(self) -> None:
        await self.app.shutdown_requested.wait()
        self.end(SHUTDOWN)

    def _render_item(self, item: Item) -> list[str]:
        return [item] if isinstance(item, str) else self.render(item)

    # ending -------------------------------------------------------------------------------------

    async def _close(self, ending: Ending, sender: asyncio.Task[None]) -> None:
        if ending is DISCONNECTED:
            return
        if self.pipeline is not None:
            if ending.finish:
                cut_short = await self._finish_pipeline()
                if cut_short is not None and ending.error is None:
                    ending = error_ending(cut_short)
            else:
                self.pipeline.cancel()
        for text in self.closing_texts(ending):
            self.outbox.put_text(text)
        self.outbox.close()
        try:
            async with asyncio.timeout(self.limits.close_timeout_s):
                await sender
        except TimeoutError:
            self.log.event("send_timeout", logging.WARNING, unsent=len(self.outbox))
            sender.cancel()
        reason = _close_reason(str(ending.error)) if ending.error else ""
        await self.ws.close(ending.close_code, reason)

    async def _finish_pipeline(self) -> ProtocolError | None:
        """Finishes the open segments, unless the client leaves first or it takes too long; in that
        case, the error that tells the client what was not translated."""
        pipeline = self.pipeline
        assert pipeline is not None
        waiting_ms = pipeline.backlog_ms
        limit_s = self.limits.finish_timeout_s + FINISH_S_PER_BACKLOG_S * waiting_ms / 1000
        finishing = asyncio.create_task(pipeline.finish())
        gone = asyncio.create_task(self.ws.wait_closed())
        done, _ = await asyncio.wait({finishing, gone}, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if finishing in done:
            error = finishing.exception()
            if error is None:
                return None
            if isinstance(error, StreamstError):  # a model the user can act on (a translation server that is down)
                self.log.event("engine_error", logging.WARNING, error=str(error))
                return ProtocolError(ErrorCode.ENGINE_ERROR, f"the last segments of this stream could not be "
                                     f"translated: {error}")  # fmt: skip
            log.error("session %s: finishing the stream failed", self.session_id, exc_info=error)
            return ProtocolError(ErrorCode.INTERNAL_ERROR, f"the server failed to finish this stream's last "
                                 f"segments (session {self.session_id}); their translation is missing")  # fmt: skip
        why = "client_gone" if gone in done else "finish_timeout"
        self.log.event(why, logging.WARNING, limit_s=round(limit_s, 1), unheard_ms=pipeline.fed_ms - pipeline.pushed_ms)
        finishing.cancel()
        pipeline.cancel()
        return ProtocolError(
            ErrorCode.FINISH_TIMEOUT,
            f"the server could not finish this stream within its limit of {limit_s:.1f} s: the translation after "
            f"{pipeline.finished_until_ms / 1000:.1f} s of the {pipeline.fed_ms / 1000:.1f} s sent is missing (the "
            f"open segment, and {waiting_ms / 1000:.1f} s the models had not heard yet); the server is overloaded",
        )

    def _idle_ending(self) -> Ending:
        message = (
            f"nothing arrived for {self.limits.idle_timeout_s:g} s (the server's idle timeout); "
            "send audio continuously (silence too), or `stop` when done"
        )
        return error_ending(ProtocolError(ErrorCode.IDLE_TIMEOUT, message), finish=True)

    def _internal_error(self) -> Ending:
        message = f"the server failed while handling this stream; its log has the details (session {self.session_id})"
        return Ending("error", False, ProtocolError(ErrorCode.INTERNAL_ERROR, message), CLOSE_INTERNAL_ERROR)

    def _too_slow(self) -> None:
        message = (
            f"more than {self.limits.max_pending_messages} messages wait to be sent: this client does not read "
            "what the server sends; read every message as it arrives"
        )
        self.end(error_ending(ProtocolError(ErrorCode.TOO_SLOW, message)))

    # events ---------------------------------------------------------------------------------------

    def _on_events(self, events: list[Event]) -> None:
        for event in events:
            if event.committed_delta and self._first_commit_s is None:
                self._first_commit_s = self.log.age_s
            if isinstance(event, FinalEvent):
                self.log.event(
                    "final",
                    logging.DEBUG,
                    segment=event.segment_id,
                    start_ms=event.start_ms,
                    end_ms=event.end_ms,
                    audio_ms=event.audio_ms,
                )
            self.outbox.put_event(event)

    def _pipeline_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        if isinstance(error, StreamstError):
            self.log.event("engine_error", logging.WARNING, error=str(error))
            self.end(error_ending(ProtocolError(ErrorCode.ENGINE_ERROR, str(error))))
        else:
            log.error("session %s: the engine failed", self.session_id, exc_info=error)
            self.end(self._internal_error())

    def _log_end(self, ending: Ending) -> None:
        pipeline = self.pipeline
        self.log.event(
            "close",
            reason=ending.reason,
            error=ending.error.code if ending.error else "-",
            close_code=ending.close_code if ending is not DISCONNECTED else "-",
            duration_s=round(self.log.age_s, 3),
            audio_ms=pipeline.fed_ms if pipeline else 0,
            finals=pipeline.n_finals if pipeline else 0,
            max_backlog_ms=pipeline.max_backlog_ms if pipeline else 0,
            first_commit_s=round(self._first_commit_s, 3) if self._first_commit_s is not None else "-",
            dropped_partials=self.outbox.n_dropped,
        )


def _close_reason(text: str) -> str:
    return text.encode("utf-8")[:CLOSE_REASON_MAX_BYTES].decode("utf-8", "ignore")


def _peer(websocket: ServerConnection) -> str:
    address = websocket.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
