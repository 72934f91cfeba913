"""Record authentication on the wire: every record a Pi sends, and every control record the hub
sends a Pi, carries an HMAC-SHA256 of itself under that device's key.

The broker is not trusted (the embedded one cannot authenticate clients), so authenticity travels
with each record, whatever carries it. A signed value is the Avro single-object record followed by a
trailer::

    record | mac (32 bytes) | key_id (ASCII) | len(key_id) (1 byte) | b"NLS1"

Avro readers stop at the record's end, so the trailer costs a reader that does not check it nothing.
The MAC covers the direction (``device`` for what a Pi sends, ``hub`` for what the hub sends it),
the topic and the record, so a record cannot be replayed on another topic or reflected back to the
Pi as a command. Each device has its own key: a leaked key lets its holder speak only for that one
device, and the hub signs what it sends a device with that device's key.

Keys live in a keyring (JSON, mode 0600): the hub's holds every device's keys, a Pi's only its own.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import asdict, dataclass
from hashlib import sha256
from pathlib import Path

from schemas.timebase import now_us

TRAILER_MAGIC = b"NLS1"
MAC_SIZE = 32
DEVICE = b"device"
HUB = b"hub"


class SignatureError(ValueError):
    """A value that is unsigned, badly signed, or signed by a key the keyring does not accept."""


@dataclass(frozen=True)
class DeviceKey:
    device_id: str
    key_id: str
    secret: str  # hex
    created_us: int
    revoked_us: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_us is None


def new_key(device_id: str) -> DeviceKey:
    created = now_us()
    return DeviceKey(device_id, f"{device_id}.{secrets.token_hex(4)}", secrets.token_hex(32), created)


def _mac(secret: str, direction: bytes, topic: str, record: bytes) -> bytes:
    return hmac.new(bytes.fromhex(secret), direction + b"\0" + topic.encode() + b"\0" + record, sha256).digest()


def sign(record: bytes, topic: str, key: DeviceKey, direction: bytes = DEVICE) -> bytes:
    key_id = key.key_id.encode("ascii")
    return record + _mac(key.secret, direction, topic, record) + key_id + bytes([len(key_id)]) + TRAILER_MAGIC


def split_signed(value: bytes) -> tuple[bytes, bytes, str]:
    """(record, mac, key_id) of a signed value; SignatureError when it carries no signature."""
    if len(value) < len(TRAILER_MAGIC) + 1 + MAC_SIZE or value[-len(TRAILER_MAGIC) :] != TRAILER_MAGIC:
        raise SignatureError("unsigned record (no signature trailer)")
    id_size = value[-len(TRAILER_MAGIC) - 1]
    id_end = len(value) - len(TRAILER_MAGIC) - 1
    mac_end = id_end - id_size
    if id_size == 0 or mac_end - MAC_SIZE < 0:
        raise SignatureError("malformed signature trailer")
    try:
        key_id = value[mac_end:id_end].decode("ascii")
    except UnicodeDecodeError:
        raise SignatureError("malformed signature trailer (key id is not ASCII)") from None
    return value[: mac_end - MAC_SIZE], value[mac_end - MAC_SIZE : mac_end], key_id


class Keyring:
    """Device keys by key id, kept in a JSON file; reloaded when the file changes, so a key revoked
    from the CLI stops being accepted by running processes within one reload."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys: dict[str, DeviceKey] = {}
        self._stamp: tuple[float, int] | None = None
        self.reload()

    def reload(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._keys, self._stamp = {}, None
            return
        stamp = (stat.st_mtime, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            raw = json.loads(self.path.read_text())
            self._keys = {k["key_id"]: DeviceKey(**k) for k in raw.get("keys", [])}
        except (ValueError, TypeError, KeyError) as exc:
            raise SignatureError(
                f"keyring {self.path} is not a neurolake keyring ({exc}); "
                "restore it or make keys anew with `neurolake keys add`"
            ) from None
        self._stamp = stamp

    def keys(self) -> list[DeviceKey]:
        return sorted(self._keys.values(), key=lambda k: (k.device_id, k.created_us))

    def active_key(self, device_id: str) -> DeviceKey | None:
        """The device's newest unrevoked key (the one the hub signs with)."""
        active = [k for k in self._keys.values() if k.device_id == device_id and k.active]
        return max(active, key=lambda k: k.created_us, default=None)

    def add(self, key: DeviceKey) -> None:
        self._keys[key.key_id] = key
        self._save()

    def revoke(self, key_id: str) -> DeviceKey:
        key = self._keys.get(key_id)
        if key is None:
            raise SignatureError(f"no key {key_id!r} in {self.path}; `neurolake keys list` shows them")
        if key.active:
            key = DeviceKey(key.device_id, key.key_id, key.secret, key.created_us, now_us())
            self._keys[key_id] = key
            self._save()
        return key

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"keys": [asdict(k) for k in self.keys()]}, out, indent=1)
        os.replace(partial, self.path)
        self._stamp = None
        self.reload()

    def verify(self, value: bytes, topic: str, direction: bytes = DEVICE) -> tuple[bytes, DeviceKey]:
        """The record inside ``value`` and the key that signed it; SignatureError with the reason
        when it is unsigned, signed by an unknown or revoked key, or the MAC does not match."""
        record, mac, key_id = split_signed(value)
        key = self._keys.get(key_id)
        if key is None:
            raise SignatureError(f"signed by unknown key {key_id!r} (not registered on this hub)")
        if not key.active:
            raise SignatureError(f"signed by revoked key {key_id!r} of device {key.device_id}")
        if not hmac.compare_digest(mac, _mac(key.secret, direction, topic, record)):
            raise SignatureError(f"bad signature for key {key_id!r} (record altered or wrong key)")
        return record, key


def ensure_key(keyring: Keyring, device_id: str) -> DeviceKey:
    """The device's active key, made and registered if it has none: for producers that run on the
    hub itself (simulated headsets, replays of recordings), whose keyring is the hub's."""
    key = keyring.active_key(device_id)
    if key is None:
        key = new_key(device_id)
        keyring.add(key)
    return key
