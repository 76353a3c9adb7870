"""WebSocket service; installed as streamst.server.

`app` (the service: routes, admission, shutdown) runs one `connection` per client, speaking the
native protocol (`native`, messages in `streamst.wire`) or FunASR's (`funasr`, `funasr_messages`);
each stream's audio goes through a `pipeline` into the shared engine via the `scheduler`; `outbox`
holds what waits to be sent. `cli` is `streamst-server`, `client` a native client, `loadbench` the
load benchmark; `static/` is the browser page."""
