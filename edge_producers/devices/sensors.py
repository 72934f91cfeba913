"""Room sensors behind one interface: the Sense HAT on a Pi, a seeded simulation elsewhere."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from edge_producers.devices.eeg import DeviceError

# Field names of the sensor_reading schema this interface fills.
SensorValues = dict[str, float | None]


class RoomSensors(Protocol):
    name: str

    def start(self) -> None: ...

    def read(self) -> SensorValues: ...

    def stop(self) -> None: ...


class SenseHatSensors:
    name = "sense_hat"

    def __init__(self) -> None:
        self._hat = None

    def start(self) -> None:
        try:
            from sense_hat import SenseHat
        except ImportError:
            raise DeviceError(
                "sense_hat is not installed: on Raspberry Pi OS run `sudo apt install sense-hat`; "
                'elsewhere set edge.sensors.source = "simulated" or "none"'
            ) from None
        try:
            self._hat = SenseHat()
        except OSError as exc:
            raise DeviceError(f"no Sense HAT found ({exc}); check it is seated on the GPIO header") from None

    def read(self) -> SensorValues:
        hat = self._hat
        if hat is None:
            raise DeviceError("Sense HAT read before start()")
        accel = hat.get_accelerometer_raw()
        gyro = hat.get_gyroscope_raw()
        return {
            "temperature_c": float(hat.get_temperature()),
            "humidity_pct": float(hat.get_humidity()),
            "pressure_hpa": float(hat.get_pressure()),
            "accel_x_g": float(accel["x"]),
            "accel_y_g": float(accel["y"]),
            "accel_z_g": float(accel["z"]),
            "gyro_x_rad_s": float(gyro["x"]),
            "gyro_y_rad_s": float(gyro["y"]),
            "gyro_z_rad_s": float(gyro["z"]),
        }

    def stop(self) -> None:
        self._hat = None


class SimulatedRoomSensors:
    """A slowly drifting room, and a participant who alternates still and moving periods.

    The still/moving periods (10-40 s each) give the lab a sensor-derived label to predict from EEG.
    """

    name = "simulated"

    def __init__(self, seed: int = 0, clock_s: Callable[[], float] = time.time) -> None:
        self._rng = np.random.default_rng(seed)
        self._clock_s = clock_s
        self._start = 0.0
        self._moving = False
        self._switch_at = 0.0

    def start(self) -> None:
        self._start = self._clock_s()
        self._switch_at = self._start + self._rng.uniform(10, 40)

    def moving_at(self, now: float) -> bool:
        while now >= self._switch_at:
            self._moving = not self._moving
            self._switch_at += self._rng.uniform(10, 40)
        return self._moving

    def read(self) -> SensorValues:
        now = self._clock_s()
        elapsed = now - self._start
        moving = self.moving_at(now)
        shake = 0.3 if moving else 0.005
        spin = 0.8 if moving else 0.002
        noise = self._rng.normal(size=6)
        return {
            "temperature_c": 22.0 + 0.5 * math.sin(elapsed / 600) + 0.02 * noise[0],
            "humidity_pct": 41.0 + 2.0 * math.sin(elapsed / 900),
            "pressure_hpa": 1012.0 + 0.3 * math.sin(elapsed / 1800),
            "accel_x_g": shake * noise[1],
            "accel_y_g": shake * noise[2],
            "accel_z_g": 1.0 + shake * noise[3],
            "gyro_x_rad_s": spin * noise[4],
            "gyro_y_rad_s": spin * noise[5],
            "gyro_z_rad_s": spin * float(self._rng.normal()),
        }

    def stop(self) -> None:
        pass


def make_sensors(source: str, seed: int = 0) -> RoomSensors | None:
    if source == "none":
        return None
    if source == "sense_hat":
        return SenseHatSensors()
    return SimulatedRoomSensors(seed)
