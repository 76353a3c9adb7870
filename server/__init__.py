"""WebSocket service; installed as streamst.server."""
