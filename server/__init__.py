"""WebSocket service; installed as streamst.server.

`app` (the service: routes, admission, shutdown; `access` decides who may connect) runs one `connection` per client, speaking the
native protocol (`native`, messages in `streamst.wire`) or FunASR's (`funasr`, `funasr_messages`);
each stream's audio goes through a `pipeline` into the shared engine via the `scheduler`; `outbox`
holds what waits to be sent. `cli` is `streamst-server`, and `process` runs it as a child process
(for the load benchmark, `streamst-bench load`, and the tests); `static/` is the browser page. The
native client is `streamst.client.stream`."""
