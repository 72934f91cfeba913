"""The clock service's UDP wire format, shared by the hub's server and the edge's probe.

Request: magic, t0. Reply: magic, t0, t1, t2. All microseconds since the epoch, network order.
"""

from __future__ import annotations

import struct

REQUEST = struct.Struct("!4sq")
REPLY = struct.Struct("!4sqqq")
MAGIC = b"NLCK"
