"""Cameras behind one interface: picamera2 on a Pi, a moving test pattern elsewhere."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from core.settings import CameraSettings
from edge_producers.devices.eeg import DeviceError
from schemas.timebase import now_us


@dataclass(frozen=True)
class Frame:
    jpeg: bytes
    width: int
    height: int
    captured_us: int


class Camera(Protocol):
    def start(self) -> None: ...

    def capture(self) -> Frame: ...

    def stop(self) -> None: ...


class TestPatternCamera:
    """Colour bars with a moving bar and a frame counter, JPEG-encoded like the Pi camera's output."""

    __test__ = False  # not a pytest test class

    def __init__(self, settings: CameraSettings) -> None:
        self._settings = settings
        self._count = 0
        x = np.linspace(0, 1, settings.width)[None, :, None]
        bars = np.array(
            [[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0], [255, 0, 255], [255, 0, 0], [0, 0, 255]],
            dtype=np.uint8,
        )
        columns = bars[np.minimum((x[0, :, 0] * 7).astype(int), 6)]
        self._background = np.repeat(columns[None, :, :], settings.height, axis=0)

    def start(self) -> None:
        from PIL import Image  # noqa: F401  (fail at start, not at the first frame)

    def capture(self) -> Frame:
        from PIL import Image

        image = self._background.copy()
        bar = (self._count * 4) % self._settings.height
        image[bar : bar + 8] = 0
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=self._settings.jpeg_quality)
        self._count += 1
        return Frame(buffer.getvalue(), self._settings.width, self._settings.height, now_us())

    def stop(self) -> None:
        pass


class PiCamera2Camera:
    """The Raspberry Pi camera through picamera2 (installed with Raspberry Pi OS, not from PyPI)."""

    def __init__(self, settings: CameraSettings) -> None:
        self._settings = settings
        self._camera = None

    def start(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise DeviceError(
                "picamera2 is not installed: on Raspberry Pi OS run `sudo apt install "
                "python3-picamera2` and create the venv with --system-site-packages; elsewhere set "
                'edge.camera.source = "test_pattern" or "none"'
            ) from None
        try:
            camera = Picamera2()
            config = camera.create_still_configuration(main={"size": (self._settings.width, self._settings.height)})
            camera.configure(config)
            camera.start()
        except Exception as exc:  # libcamera raises RuntimeError/IndexError when no camera
            raise DeviceError(f"no camera could be opened ({exc}); check the ribbon cable") from None
        self._camera = camera

    def capture(self) -> Frame:
        if self._camera is None:
            raise DeviceError("camera read before start()")
        buffer = io.BytesIO()
        self._camera.options["quality"] = self._settings.jpeg_quality
        self._camera.capture_file(buffer, format="jpeg")
        return Frame(buffer.getvalue(), self._settings.width, self._settings.height, now_us())

    def stop(self) -> None:
        if self._camera is not None:
            self._camera.stop()
            self._camera.close()
            self._camera = None


def make_camera(settings: CameraSettings) -> Camera | None:
    if settings.source == "none":
        return None
    if settings.source == "picamera2":
        return PiCamera2Camera(settings)
    return TestPatternCamera(settings)
