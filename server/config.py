"""How the service is set up: where it listens, who may connect, and its limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamst.errors import OptionsError
from streamst.options import DEFAULT_MODE, MODES
from streamst.server.limits import Limits

DEFAULT_PORT = 8765
FUNASR_PORT = 10095  # FunASR's own default, so its clients find the service where they expect it


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # interface to listen on; "0.0.0.0" or "::" to serve the network
    port: int = DEFAULT_PORT  # page, native protocol (/v1/stream), FunASR protocol (/funasr), health
    funasr_port: int | None = FUNASR_PORT  # a second port where every WebSocket speaks FunASR; None for none
    limits: Limits = field(default_factory=Limits)
    token: str | None = None  # shared secret clients give as "Authorization: Bearer …" or ?token=…
    allowed_origins: tuple[str, ...] = ()  # browser origins allowed besides the page's own; () allows any
    funasr_source: str = "zh"  # spoken language of FunASR clients that do not name one
    funasr_target: str = "en"  # caption language of FunASR clients that do not name one
    default_mode: str = DEFAULT_MODE  # mode of streams that name none (FunASR clients never do)
    realtime: bool = True  # live streams skip stale intermediate steps when the models fall behind
    preload: bool = True  # load the models at startup (else on the first session)
    certfile: str | None = None  # TLS certificate (PEM) for wss:// and https://
    keyfile: str | None = None  # its private key
    shutdown_grace_s: float = 90.0  # on SIGTERM, how long open sessions may take to finish

    def __post_init__(self) -> None:
        for name, port in (("port", self.port), ("funasr_port", self.funasr_port)):
            if port is not None and not 0 <= port <= 65_535:
                raise OptionsError(f"{name} must be from 0 to 65535, got {port}")
        if self.funasr_port is not None and self.funasr_port == self.port and self.port != 0:
            raise OptionsError(f"port and funasr_port are both {self.port}; give them different ports")
        if (self.certfile is None) != (self.keyfile is None):
            raise OptionsError("give both certfile and keyfile for TLS, or neither")
        if self.default_mode not in MODES:
            raise OptionsError(f"unknown mode {self.default_mode!r}; choose one of: {', '.join(MODES)}")
        if self.token is not None and not self.token:
            raise OptionsError("the token must not be empty; leave it out to allow anyone")
