"""Camera frames to the browser as an MJPEG stream (``multipart/x-mixed-replace``), one HTTP
response per viewer: the browser decodes each JPEG as it arrives, and frames stay out of the Bokeh
document (no base64 copy, no document patch and no re-render of a Div per frame and tab).

Like the page, the stream is served on loopback only; it is refused to other sites' pages (the
browser's ``Sec-Fetch-Site``), so a web page the lab visits cannot embed the lab's cameras."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dashboard.feed import CameraFrame, LiveFeed
from schemas.records import identifier_problem

log = logging.getLogger(__name__)

BOUNDARY = "neurolake-frame"
CONTENT_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
# How often a viewer looks for a new frame: well above any camera's rate (edge.camera.fps <= 60).
POLL_S = 0.01


def stream_path(device_id: str) -> str:
    """Where the page finds a device's camera (device ids are URL-safe: schemas/records.py)."""
    return f"/camera/{device_id}.mjpg"


def frame_part(frame: CameraFrame) -> bytes:
    """One part of the multipart stream: its headers and the encoded image."""
    kind = "image/png" if frame.encoding == "PNG" else "image/jpeg"
    head = f"--{BOUNDARY}\r\nContent-Type: {kind}\r\nContent-Length: {len(frame.data)}\r\n\r\n"
    return head.encode() + frame.data + b"\r\n"


def camera_handler(feed: LiveFeed) -> Any:
    """The tornado handler class serving ``/camera/<device>.mjpg`` from ``feed``."""
    from tornado.iostream import StreamClosedError
    from tornado.web import HTTPError, RequestHandler

    class CameraStream(RequestHandler):
        async def get(self, device_id: str) -> None:
            if self.request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
                raise HTTPError(403, reason="the camera is shown on the dashboard's own page only")
            if identifier_problem("device", device_id) is not None:
                raise HTTPError(404)
            with feed.lock:
                known = device_id in feed.devices
            if not known:
                raise HTTPError(404, reason="no such device")
            self.set_header("Content-Type", CONTENT_TYPE)
            self.set_header("Cache-Control", "no-store")
            shown: CameraFrame | None = None
            try:
                while True:
                    with feed.lock:
                        health = feed.devices.get(device_id)
                        frame = health.frame if health is not None else None
                    if frame is not None and frame is not shown:
                        self.write(frame_part(frame))
                        await self.flush()
                        shown = frame
                    await asyncio.sleep(POLL_S)
            except StreamClosedError:
                return  # the viewer went away

    return CameraStream
