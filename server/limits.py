"""Operating limits of the service and the admission of sessions against them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from streamst.cores import default_concurrency
from streamst.errors import OptionsError

log = logging.getLogger("streamst.server.limits")

KIB = 1024


@dataclass(frozen=True)
class Limits:
    max_sessions: int = 8  # sessions open at once over every endpoint; more are refused with HTTP 503
    max_frame_bytes: int = 256 * KIB  # largest binary frame (≈ 8 s of 16 kHz PCM16); larger ones end the session
    max_session_s: float = 4 * 3600.0  # audio one session may stream, in seconds
    max_lifetime_s: float = 5 * 3600.0  # how long one session may last on the wall clock, audio or not
    idle_timeout_s: float = 30.0  # a session that sends no audio for this long is ended (empty frames do not count)
    max_utilisation: float = 0.9  # models busier than this over the last 10 s, with calls waiting: new sessions get 503
    max_backlog_ms: int = 20_000  # audio waiting for the models before a live stream is ended as overloaded
    max_offline_backlog_ms: int = 600_000  # the same for FunASR's offline mode, whose clients upload files
    max_batch_ms: int = 2_000  # audio one model call takes from a session's backlog (keeps turns fair)
    max_pending_messages: int = 64  # unsent messages to one client before it is cut off as too slow
    model_concurrency: int = field(default_factory=default_concurrency)  # model calls at once over all sessions (streamst.cores)
    ping_interval_s: float = 20.0  # keepalive ping period; a client that never answers is dropped
    ping_timeout_s: float = 20.0
    close_timeout_s: float = 5.0  # how long the last messages and the closing handshake may take
    finish_timeout_s: float = 60.0  # how long finishing a session's open segments may take
    max_rooms: int = 4  # rooms open at once (one speaker, many listeners each); more are refused with server_busy
    max_listeners_per_room: int = 200  # caption readers of one room; more get room_full (HTTP 503)
    max_languages_per_room: int = 4  # caption languages one room translates into at once (each costs compute)
    room_history_s: float = 600.0  # committed text a late joiner receives first: the last this many seconds of speech
    room_history_finals: int = 1_000  # and at most this many finals
    room_catch_up_s: float = 60.0  # a language nobody read yet is first translated from this far back
    room_wait_s: float = 600.0  # a room made with POST /v1/rooms ends if no speaker starts within this time

    def __post_init__(self) -> None:
        positive = {
            "max_sessions": self.max_sessions,
            "max_frame_bytes": self.max_frame_bytes,
            "max_session_s": self.max_session_s,
            "max_lifetime_s": self.max_lifetime_s,
            "max_utilisation": self.max_utilisation,
            "idle_timeout_s": self.idle_timeout_s,
            "max_backlog_ms": self.max_backlog_ms,
            "max_offline_backlog_ms": self.max_offline_backlog_ms,
            "max_batch_ms": self.max_batch_ms,
            "max_pending_messages": self.max_pending_messages,
            "model_concurrency": self.model_concurrency,
            "ping_interval_s": self.ping_interval_s,
            "ping_timeout_s": self.ping_timeout_s,
            "close_timeout_s": self.close_timeout_s,
            "finish_timeout_s": self.finish_timeout_s,
            "max_rooms": self.max_rooms,
            "max_listeners_per_room": self.max_listeners_per_room,
            "max_languages_per_room": self.max_languages_per_room,
            "room_history_s": self.room_history_s,
            "room_history_finals": self.room_history_finals,
            "room_wait_s": self.room_wait_s,
        }
        for name, value in positive.items():
            if not value > 0:
                raise OptionsError(f"server limit {name} must be positive, got {value}")
        if self.room_catch_up_s < 0:
            raise OptionsError(f"server limit room_catch_up_s must be 0 or more, got {self.room_catch_up_s}")
        if self.max_frame_bytes < 4 * KIB:
            raise OptionsError(f"max_frame_bytes must be at least {4 * KIB} bytes, got {self.max_frame_bytes}")

    @property
    def socket_max_size(self) -> int:
        """The WebSocket message size limit: twice `max_frame_bytes`, so that a frame somewhat over the
        limit gets a `frame_too_large` error; anything larger is cut off by the socket (close 1009)."""
        return 2 * self.max_frame_bytes


@dataclass(frozen=True)
class Refusal:
    """Why a session cannot be admitted: an HTTP status and a reason for people."""

    status: int
    code: str
    reason: str


class Admission:
    """Counts sessions against `max_sessions`. A slot is taken at the handshake and given back when
    the connection ends; slots of handshakes that never completed are reclaimed through `is_gone`."""

    def __init__(self, max_sessions: int, is_gone: Callable[[Hashable], bool]) -> None:
        self.max_sessions = max_sessions
        self._is_gone = is_gone
        self._holders: set[Hashable] = set()

    @property
    def n_active(self) -> int:
        self._reclaim()
        return len(self._holders)

    def admit(self, holder: Hashable) -> bool:
        """Takes a slot for `holder`; False when every slot is in use."""
        if self.n_active >= self.max_sessions:
            return False
        self._holders.add(holder)
        return True

    def release(self, holder: Hashable) -> None:
        self._holders.discard(holder)

    def _reclaim(self) -> None:
        gone = {holder for holder in self._holders if self._is_gone(holder)}
        if gone:
            log.debug("reclaiming %d slot(s) of handshakes that never completed", len(gone))
            self._holders -= gone
