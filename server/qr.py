"""A link as a QR code (SVG), so people in the room can open the caption viewer with their phones.

Drawn by segno (pure Python); without it the speaker's page shows the link alone."""

from __future__ import annotations

import functools
import io
import logging

log = logging.getLogger("streamst.server.qr")

MODULE_PX = 6  # size of one QR module in the SVG
QUIET_ZONE_MODULES = 4  # the white border QR readers need


@functools.lru_cache(maxsize=16)
def svg(text: str) -> bytes | None:
    """The QR code of `text` as an SVG document; None when segno is not installed."""
    try:
        import segno
    except ImportError:
        log.warning("QR codes need the segno package (pip install segno); the page shows the link only")
        return None
    buffer = io.BytesIO()
    segno.make(text, error="m").save(buffer, kind="svg", scale=MODULE_PX, border=QUIET_ZONE_MODULES,
                                      dark="#000", light="#fff", xmldecl=False, title="room link")  # fmt: skip
    return buffer.getvalue()
