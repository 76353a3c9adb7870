"""How the service is set up: where it listens, who may connect, and its limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamst.errors import OptionsError
from streamst.options import DEFAULT_MODE, MODES
from streamst.server.access import is_loopback_host, origin_key
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
    no_token: bool = False  # beyond loopback, serve without a token rather than generate one at start
    allowed_origins: tuple[str, ...] = ()  # other sites' pages allowed; see `access` for what () allows
    public_origins: tuple[str, ...] = ()  # where the page is served besides localhost ("https://captions.example.org")
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
        if self.token is not None and self.no_token:
            raise OptionsError("a token and no_token (--no-token) contradict each other; give one of them")
        for origin in self.public_origins:
            if origin_key(origin) is None:
                raise OptionsError(
                    f"public origin {origin!r} is not an origin; give scheme://host[:port], "
                    "such as https://captions.example.org or http://192.168.1.20:8765"
                )

    @property
    def loopback_only(self) -> bool:
        """Listening on localhost, 127.0.0.0/8 or ::1: only this machine can connect."""
        return is_loopback_host(self.host)

    @property
    def generates_token(self) -> bool:
        """No token given, `no_token` not chosen, and the network can connect: the app makes one up at start."""
        return self.token is None and not self.no_token and not self.loopback_only
