"""One typed settings object for every neurolake component.

Sources, lowest precedence first: built-in defaults (a single lab machine), an optional TOML file,
then environment variables ``NEUROLAKE_<SECTION>__<KEY>`` (for example
``NEUROLAKE_KAFKA__BOOTSTRAP_SERVERS``). pydantic-settings merges them key by key; the two sources
here add what it lacks: an unknown key or variable fails with the nearest real setting instead of
being ignored. The result is validated once, frozen, and passed to whatever needs it; nothing below
the CLI reads the environment.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from core.errors import SettingsError
from schemas.records import identifier_problem

ENV_PREFIX = "NEUROLAKE_"
ENV_CONFIG_FILE = "NEUROLAKE_CONFIG"
DEFAULT_CONFIG_FILE = "neurolake.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class KafkaSettings(_Section):
    """Client settings; pointing these at a real cluster needs no code change."""

    bootstrap_servers: str = "127.0.0.1:19092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    # Idempotent producers: a retried send is never written twice (Kafka keeps producer ids across
    # a restart). Bronze still dedups by (topic, device, epoch, seq): a Pi resends after an outage.
    enable_idempotence: bool = True
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    linger_ms: int = Field(default=5, ge=0, le=1000)
    # How long the broker may hold a live reader's fetch (dashboard, live scorer) waiting for data.
    live_fetch_wait_ms: int = Field(default=1, ge=0, le=500)
    request_timeout_ms: int = Field(default=10_000, ge=1000)

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL"):
            missing = [
                name for name in ("sasl_mechanism", "sasl_username", "sasl_password") if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"security_protocol={self.security_protocol} needs kafka.{', kafka.'.join(missing)}")
        return self

    def client_config(self) -> dict[str, Any]:
        """librdkafka properties shared by producers, consumers and admin clients."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        for key in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
            value = getattr(self, key)
            if value is not None:
                config[key.replace("_", ".")] = str(value)
        return config

    def java_client_config(self) -> dict[str, str]:
        """The same connection for Kafka's Java client (Spark's Kafka source takes these as
        ``kafka.*`` options): PEM trust and key stores, SASL through a JAAS line."""
        config = {"bootstrap.servers": self.bootstrap_servers, "security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
            module = (
                "org.apache.kafka.common.security.plain.PlainLoginModule"
                if self.sasl_mechanism == "PLAIN"
                else "org.apache.kafka.common.security.scram.ScramLoginModule"
            )
            password = self.sasl_password.get_secret_value() if self.sasl_password else ""
            config["sasl.jaas.config"] = f'{module} required username="{self.sasl_username}" password="{password}";'
        if self.ssl_ca_location is not None:
            config["ssl.truststore.type"] = "PEM"
            config["ssl.truststore.location"] = str(self.ssl_ca_location)
        if self.ssl_certificate_location is not None and self.ssl_key_location is not None:
            # Java's PEM key store takes the certificate chain and the key as text.
            config["ssl.keystore.type"] = "PEM"
            config["ssl.keystore.certificate.chain"] = self.ssl_certificate_location.read_text()
            config["ssl.keystore.key"] = self.ssl_key_location.read_text()
        return config

    def producer_config(self) -> dict[str, Any]:
        return {
            **self.client_config(),
            "enable.idempotence": self.enable_idempotence,
            # Stored means stored on min.insync.replicas copies (idempotence asks for this too).
            "acks": "all",
            "compression.type": self.compression_type,
            "linger.ms": self.linger_ms,
            "request.timeout.ms": self.request_timeout_ms,
        }


class BrokerSettings(_Section):
    """The embedded Apache Kafka broker that ``neurolake up`` starts (KRaft, combined broker and
    controller, its log under ``paths.home/kafka``; infra/kafka_broker.py)."""

    embedded: bool = True
    # The hub's own processes connect here, in plaintext: keep it on loopback (the hub is trusted).
    host: str = "127.0.0.1"
    port: int = Field(default=19092, ge=1, le=65535)
    # The KRaft controller's listener (loopback only; its principal is a super user).
    controller_port: int = Field(default=19094, ge=1, le=65535)
    # TLS with client certificates for the Pis (`neurolake tls init`, then `tls issue DEVICE`): 0
    # leaves it off; 19093 is customary. Each certificate's CN is its principal, held to its ACLs.
    tls_port: int = Field(default=0, ge=0, le=65535)
    tls_host: str = "0.0.0.0"
    # The name the Pis reach the hub by, advertised on the TLS listener (in the hub's certificate).
    advertised_host: str | None = None
    # The broker JVM's heap: a lab's topics need little; Kafka's default (1 GiB) is for servers.
    heap: str = Field(default="512m", pattern=r"^[0-9]+[kmgKMG]$")
    startup_timeout_s: float = Field(default=60.0, gt=0)
    # 1: one node. 3: a local cluster of three nodes, each a broker and a KRaft controller (a quorum
    # of three survives one node's loss); node k listens on each port above + k * node_port_step.
    nodes: Literal[1, 3] = 1
    node_port_step: int = Field(default=10, ge=3, le=1000)

    def node_ports(self, node: int) -> tuple[int, int, int]:
        """(client, controller, TLS or 0) ports of node ``node`` (0-based)."""
        step = node * self.node_port_step
        return self.port + step, self.controller_port + step, (self.tls_port + step) if self.tls_port else 0

    @property
    def bootstrap_servers(self) -> str:
        """Every node's client address (a client must reach the cluster while any node is down)."""
        return ",".join(f"{self.host}:{self.node_ports(n)[0]}" for n in range(self.nodes))

    @model_validator(mode="after")
    def _distinct_ports(self) -> BrokerSettings:
        ports = {}
        for node in range(self.nodes):
            client, controller, tls = self.node_ports(node)
            suffix = f" (node {node})" if self.nodes > 1 else ""
            ports[f"broker.port{suffix}"] = client
            ports[f"broker.controller_port{suffix}"] = controller
            if tls:
                ports[f"broker.tls_port{suffix}"] = tls
        if len(set(ports.values())) != len(ports):
            raise ValueError(
                f"broker ports must differ: {', '.join(f'{k}={v}' for k, v in ports.items())}; "
                f"change broker.port, broker.controller_port or broker.node_port_step"
            )
        return self


class TopicSettings(_Section):
    """Partition counts per topic; names and record types live in ``schemas.catalog``."""

    partitions: dict[str, int] = Field(default_factory=dict)
    # Copies of each partition, and how many must have a record before the producer (acks=all) is
    # told it is stored. A local cluster of three nodes (broker.nodes = 3) defaults to 3 and 2.
    replication_factor: int = Field(default=1, ge=1)
    min_insync_replicas: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _known_topics(self) -> TopicSettings:
        from schemas.catalog import TOPICS

        for name, count in self.partitions.items():
            if name not in TOPICS:
                raise ValueError(f"unknown topic {name!r} in topics.partitions; known: {', '.join(sorted(TOPICS))}")
            if count < 1:
                raise ValueError(f"topics.partitions[{name!r}] must be >= 1, got {count}")
        return self

    def partitions_for(self, topic: str) -> int:
        from schemas.catalog import TOPICS

        return self.partitions.get(topic, TOPICS[topic].default_partitions)


class MlflowSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=15000, ge=1, le=65535)
    # Set to use an external tracking server; the embedded one is then not started.
    tracking_uri: str | None = None
    # A first start imports MLflow's server and migrates a new store: 62 s on a loaded 2-core machine
    # (39 s to its first log line, 21 s of migrations), just over the 60 s this once was.
    startup_timeout_s: float = Field(default=120.0, gt=0)
    model_name: str = "neurolake-ssvep"

    @property
    def effective_tracking_uri(self) -> str:
        return self.tracking_uri or f"http://{self.host}:{self.port}"


class AirflowSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=18080, ge=1, le=65535)
    log_server_port: int = Field(default=18793, ge=1, le=65535)
    parallelism: int = Field(default=4, ge=1, le=64)
    startup_timeout_s: float = Field(default=120.0, gt=0)
    # The retrain DAG's daily run (cron, UTC), beside the runs that new labelled windows in gold
    # trigger; "" for none. Unpausing a DAG with a cron schedule runs its latest past slot at once
    # (Airflow's catchup=False), so a short-lived stack (the demo's) sets "": its triggered run
    # would otherwise wait behind a whole second retrain.
    retrain_cron: str = "0 3 * * *"

    @field_validator("retrain_cron")
    @classmethod
    def _five_cron_fields(cls, value: str) -> str:
        if value.strip() and len(value.split()) != 5:
            raise ValueError(
                f"{value!r} is not a cron expression; give five fields (minute hour day month weekday), "
                'e.g. "0 3 * * *", or "" for no daily run'
            )
        return value.strip()


class SparkSettings(_Section):
    # local[2]: driver and executors in one JVM. With ``workers`` > 0 (`neurolake up` starts a
    # standalone master and that many workers, each its own process) the default is that master.
    master: str = "local[2]"
    shuffle_partitions: int = Field(default=4, ge=1)
    driver_memory: str = "2g"
    ui_enabled: bool = False
    ui_port: int = Field(default=14040, ge=1, le=65535)
    # A local standalone cluster: the master's ports and each worker's share of the machine.
    workers: int = Field(default=0, ge=0, le=8)
    master_port: int = Field(default=17077, ge=1, le=65535)
    master_ui_port: int = Field(default=18180, ge=1, le=65535)
    worker_cores: int = Field(default=1, ge=1)
    worker_memory: str = Field(default="1500m", pattern=r"^[0-9]+[kmgKMG]$")
    executor_memory: str = Field(default="1g", pattern=r"^[0-9]+[kmgKMG]$")

    def worker_port(self, number: int) -> int:
        """Worker ``number``'s (1-based) port: the master's + number, so the master's list names it."""
        return self.master_port + number

    # None: JAVA_HOME from the environment the CLI was started in, else `java` on PATH.
    java_home: Path | None = None
    min_java_version: int = 17
    # Start the driver JVM from a class-data-sharing archive that `make setup` records (about 2 s
    # less to a session and 1 s less to its first job); without the archive Spark starts as usual.
    class_archive: bool = True
    # Extra options for the driver JVM. Its JIT stops at the quick compiler: the optimizing one still
    # took a third of the driver's CPU (0.31 of 0.76 cores) a minute into a start at 100 headsets, on
    # a machine the lake saturates, and the JVM's own share of the work (Kafka reads, shuffle, state
    # store; files and commits are Python's) is small enough that quick code costs less than making
    # better code. The code cache is sized for Spark, Delta and Kafka's classes (the default ran
    # out: "Out of space in CodeCache"). "" for none.
    java_options: str = "-XX:ReservedCodeCacheSize=256m -XX:TieredStopAtLevel=1"
    # More Spark configuration for every session (over neurolake's own), e.g. a cluster's.
    conf: dict[str, str] = Field(default_factory=dict)


class ClockSettings(_Section):
    """The hub's UDP time service and how edge devices probe it (NTP-style, lowest round trip wins)."""

    host: str = "127.0.0.1"
    port: int = Field(default=19123, ge=1, le=65535)
    probe_interval_s: float = Field(default=5.0, gt=0)
    probes_per_round: int = Field(default=8, ge=1, le=64)
    probe_timeout_s: float = Field(default=0.2, gt=0)
    # Replies implying a larger device-to-hub offset are refused: they would shift lab time (and so
    # labels). A Pi that is further off must set its clock (NTP from the hub) first.
    max_offset_s: float = Field(default=600.0, gt=0)


class SpoolSettings(_Section):
    # Relative to paths.home unless absolute.
    directory: Path = Path("spool")
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    # drop_oldest: evict records already delivered to Kafka (but not yet acknowledged by the lake)
    # first, then the oldest undelivered ones, counting those as losses. refuse_new: keep the
    # backlog and drop (and count) new records instead.
    when_full: Literal["drop_oldest", "refuse_new"] = "drop_oldest"
    # FULL: a spooled record survives a power cut (about 0.3 % of a core per headset on the dev
    # machine, bench/edge_bench.py). NORMAL survives a crash of the process, not of the power.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"


class CameraSettings(_Section):
    source: Literal["none", "picamera2", "test_pattern"] = "none"
    fps: float = Field(default=2.0, gt=0, le=60)
    width: int = Field(default=320, ge=16, le=4056)
    height: int = Field(default=240, ge=16, le=3040)
    jpeg_quality: int = Field(default=75, ge=1, le=100)
    # Kafka's default message limit is 1 MiB; frames stay well below it.
    max_frame_bytes: int = Field(default=512 * 1024, ge=1024, le=900 * 1024)


class SensorSettings(_Section):
    source: Literal["none", "sense_hat", "simulated"] = "none"
    rate_hz: float = Field(default=2.0, gt=0, le=100)


class StimulusSettings(_Section):
    """A visual-stimulus protocol: flicker classes shown in shuffled order with rests between."""

    enabled: bool = False
    classes: dict[str, float] = Field(
        default_factory=lambda: {"flicker_8hz": 8.0, "flicker_10hz": 10.0, "flicker_12hz": 12.0, "flicker_15hz": 15.0}
    )
    # Bounds hold for the settings file and for SET_CONFIG alike: a trial of microseconds would make
    # the schedule loop without end.
    stimulus_s: float = Field(default=4.0, ge=0.25, le=600)
    rest_s: float = Field(default=2.0, ge=0.1, le=600)
    lead_in_s: float = Field(default=2.0, ge=0, le=600)
    # The cue (the target outlined) shown before each trial's flicker; 0: none (the flicker's onset
    # keeps its place in the schedule either way, the cue is taken from the rest before it).
    cue_s: float = Field(default=0.0, ge=0, le=600)
    repetitions: int = Field(default=10, ge=1, le=10_000)
    seed: int = 0
    # "classes": the lab's targets (`classes`, phase 0). "benchmark40": the 40-target grid of the
    # Tsinghua SSVEP benchmark (Wang et al. 2017): 8.0-15.8 Hz in 0.2 Hz steps, phases 0, pi/2, pi,
    # 3pi/2 in turn, 5 rows x 8 columns; `classes` is then not used.
    layout: Literal["classes", "benchmark40"] = "classes"
    # The presenter (`neurolake stimulus serve`, or `edge run` with this on): a page on the stimulus
    # monitor draws the flicker frame by frame and the markers are stamped from the frames it drew,
    # not from the timetable. It listens on loopback: its page reports frames that become markers.
    presenter: bool = False
    presenter_host: str = "127.0.0.1"
    presenter_port: int = Field(default=15010, ge=1, le=65535)
    # Added to every presenter marker: the monitor's own delay from the frame the browser drew to
    # light, measured with a photodiode on the page's sync patch (0 when unmeasured).
    display_latency_ms: float = Field(default=0.0, ge=0, le=1000)

    @model_validator(mode="after")
    def _frequencies_positive(self) -> StimulusSettings:
        if not self.classes:
            raise ValueError("edge.stimulus.classes needs at least one label = frequency_hz")
        for label, hz in self.classes.items():
            if hz <= 0:
                raise ValueError(f"edge.stimulus.classes[{label!r}] must be > 0 Hz, got {hz}")
        return self


# Hardware the simulated headset imitates (rate, channel names: dsp/simulation.py HEADSETS): the lab's
# 16-channel 250 Hz headset, OpenBCI's boards, and the 9 occipital channels of the Tsinghua benchmark.
SimulatedBoard = Literal["simulated", "cyton", "cyton_daisy", "ganglion", "benchmark"]
# Named SSVEP SNRs (dB). "benchmark": the SNR at which our filter-bank CCA and ensemble TRCA score on
# the simulated 40-target benchmark what they score on the real one (0.20/0.63 and 0.79/0.93 at
# 0.5/1 s, 35 subjects, leave-one-block-out; bench/decoding_bench.py), found by sweeping this value
# (8 simulated subjects at -7.6 dB: 0.21/0.63 and 0.78/0.94; at -6.6 all four were 3-6 points high).
SSVEP_SNR_PRESETS_DB: dict[str, float] = {"benchmark": -7.6}


class SimulationSettings(_Section):
    """The simulated headset (dsp/simulation.py): 1/f background mixed through a head model, alpha,
    mains, drift, blinks, EMG bursts, flat or railed channels, and the SSVEP."""

    seed: int = 0
    # The simulated hardware; unset, it follows edge.board when that names an OpenBCI board.
    board: SimulatedBoard = "simulated"
    # None: the board's own rate; a number overrides it.
    sample_rate_hz: float | None = Field(default=None, gt=0)
    # None: every channel of the board; N: its first N.
    n_eeg_channels: int | None = Field(default=None, ge=1)
    with_pulse: bool = True
    background_uv: float = Field(default=10.0, ge=0)
    # Posterior alpha at its focus, RMS; the flicker halves it (alpha blocking).
    alpha_uv: float = Field(default=10.0, ge=0)
    mains_uv: float = Field(default=5.0, ge=0)
    mains_hz: float = Field(default=60.0, gt=0)
    blink_uv: float = Field(default=80.0, ge=0)
    blinks_per_minute: float = Field(default=12.0, ge=0)
    emg_uv: float = Field(default=40.0, ge=0)
    emg_bursts_per_minute: float = Field(default=2.0, ge=0)
    drift_uv: float = Field(default=10.0, ge=0)
    # An electrode that comes loose (flat) or saturates the amplifier (railed) for a few seconds.
    channel_faults_per_hour: float = Field(default=2.0, ge=0)
    # SSVEP power over the background's on the occipital focus, in dB (10*log10), for an average
    # subject; or a preset name (SSVEP_SNR_PRESETS_DB).
    ssvep_snr_db: float = -6.0
    timestamp_jitter_us: float = Field(default=500.0, ge=0)
    # Fault injection: every Nth block is lost after acquisition, as over a failing radio link, so
    # the page's loss alert and the lake's gap handling can be seen; 0: none.
    drop_block_every: int = Field(default=0, ge=0)
    # Fault injection at the radio (boards without one of their own: simulated, synthetic, playback):
    # each packet is lost with this probability, and found again from the packet counter like a
    # real Cyton's losses (devices/packets.py); 0: none.
    packet_loss: float = Field(default=0.0, ge=0, le=0.5)

    @field_validator("ssvep_snr_db", mode="before")
    @classmethod
    def _snr_preset(cls, value: Any) -> Any:
        if isinstance(value, str) and not _is_number(value):
            if value not in SSVEP_SNR_PRESETS_DB:
                raise ValueError(
                    f"edge.simulation.ssvep_snr_db must be a number of dB or one of "
                    f"{', '.join(SSVEP_SNR_PRESETS_DB)}, got {value!r}"
                )
            return SSVEP_SNR_PRESETS_DB[value]
        return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class EdgeSettings(_Section):
    """One Pi's devices. `neurolake edge setup` writes these into the Pi's neurolake.toml."""

    device_id: str = "pi-1"
    board: Literal["simulated", "synthetic", "playback", "cyton", "cyton_daisy", "ganglion", "lsl"] = "simulated"
    serial_port: str | None = None
    playback_file: Path | None = None
    # The board the playback recording was made with (its description: rate, rows, names).
    playback_board: Literal["synthetic", "cyton", "cyton_daisy", "ganglion"] = "synthetic"
    # board = "lsl": the LSL stream to record (an LSL predicate, e.g. "type='EEG'" or "name='ActiCHamp'").
    # lsl_markers, with any board: a marker stream (PsychoPy, OpenSesame) recorded beside the EEG,
    # whose START/END strings label gold windows (devices/lsl.py).
    lsl_stream: str = "type='EEG'"
    lsl_markers: str | None = None
    lsl_timeout_s: float = Field(default=10.0, gt=0)
    # Cyton analog mode ("/2"): the pulse sensor streams on the AUX (analog) rows.
    analog_mode: bool = False
    montage: str = "standard_1020"
    subject_id: str | None = None
    task: str | None = None
    block_size: int = Field(default=25, ge=1, le=1000)
    # How long the edge producer may hold a record to batch it; the live path wants it at once.
    linger_ms: int = Field(default=1, ge=0, le=1000)
    # 0: each device is read when its next block is due and the block is sent at once (live path,
    # about 5 ms to a hub reader). N > 0: every device is read every N ms and the sender polls,
    # which costs less CPU per headset when one process hosts many (simulations, a busy Pi).
    tick_ms: int = Field(default=0, ge=0, le=1000)
    heartbeat_s: float = Field(default=2.0, gt=0)
    # A producer with records in flight and no delivery report for this long is rebuilt.
    stall_timeout_s: float = Field(default=10.0, gt=0)
    reconnect_backoff_max_s: float = Field(default=5.0, gt=0, le=60)
    # After a broker outage, resend everything the lake has not acknowledged. Kafka keeps what it
    # acknowledged on disk, so this is a second guard (a broker that lost its disk, an unclean
    # election on a cluster someone else runs); bronze drops the duplicates it makes.
    resend_unacked_after_outage: bool = True
    # Obey a hub-signed SHUTDOWN addressed to this device by name (never one for "*"). The process
    # then exits 0, so systemd (Restart=on-failure) leaves it down until started again on the Pi.
    allow_remote_shutdown: bool = False
    camera: CameraSettings = CameraSettings()
    sensors: SensorSettings = SensorSettings()
    stimulus: StimulusSettings = StimulusSettings()
    simulation: SimulationSettings = SimulationSettings()
    spool: SpoolSettings = SpoolSettings()

    @model_validator(mode="after")
    def _board_inputs(self) -> EdgeSettings:
        if self.board in ("cyton", "cyton_daisy", "ganglion") and not self.serial_port:
            raise ValueError(
                f"edge.board={self.board} needs edge.serial_port (e.g. /dev/ttyUSB0; NEUROLAKE_EDGE__SERIAL_PORT)"
            )
        if self.board == "playback" and self.playback_file is None:
            raise ValueError("edge.board=playback needs edge.playback_file (a BrainFlow recording)")
        problem = identifier_problem("edge.device_id", self.device_id)
        if problem:
            raise ValueError(problem)
        # A lab of Cytons simulates Cytons: the simulated headset follows the board named here
        # unless edge.simulation.board says otherwise.
        if "board" not in self.simulation.model_fields_set and self.board in ("cyton", "cyton_daisy", "ganglion"):
            object.__setattr__(self, "simulation", self.simulation.model_copy(update={"board": self.board}))
        return self


class LakeSettings(_Section):
    """Streaming lake: filters, windows and micro-batch pacing."""

    band_low_hz: float = Field(default=1.0, gt=0)
    band_high_hz: float = Field(default=60.0, gt=0)
    # None (or 0 in TOML/env) disables the notch; 50.0 for labs on 50 Hz mains.
    notch_hz: float | None = 60.0
    # The mains filter at notch_hz: "notch" (scipy iirnotch of quality notch_q, -3 dB over
    # notch_hz / notch_q) or "bandstop" (Butterworth of bandstop_order over notch_hz +-
    # bandstop_width_hz / 2; the lab's 59-61 Hz order 2 is width 2, order 2). Changing the filter
    # changes the processor fingerprint, so `neurolake lake rebuild` refilters older sessions.
    line_filter: Literal["notch", "bandstop"] = "notch"
    notch_q: float = Field(default=30.0, gt=0)
    bandstop_width_hz: float = Field(default=2.0, gt=0)
    bandstop_order: int = Field(default=2, ge=1, le=8)
    window_s: float = Field(default=2.0, gt=0)
    window_overlap: float = Field(default=0.8, ge=0, lt=1)
    # How long an out-of-order gap is waited for (the edge resends after outages) before it is
    # recorded as lost and processing goes on after it.
    gap_wait_s: float = Field(default=30.0, ge=0)
    # A session with no rows for this long and no gap wait leaves silver/gold's bucket state (its
    # state kept beside the checkpoint, taken up again if its blocks come), so that ended sessions do
    # not cross the JVM at every batch.
    idle_session_park_s: float = Field(default=600.0, gt=0)
    trigger_s: float = Field(default=1.0, ge=0)
    # Bronze's second query (heartbeats, room sensors, camera frames): nothing waits on them.
    device_trigger_s: float = Field(default=5.0, ge=0)
    max_records_per_trigger: int = Field(default=50_000, ge=1)
    # Spark tasks per micro-batch: bronze decodes in this many, silver/gold keeps its per-session
    # state in this many partitions (fixed when its checkpoint is made); one per core locally.
    silver_tasks: int = Field(default=2, ge=1, le=1024)
    # How many bronze files one silver/gold micro-batch may take (bounds a catch-up batch).
    max_bronze_files_per_trigger: int = Field(default=1000, ge=1)
    # Rows per Arrow batch that the EEG queries (bronze, silver/gold) hand to their Python workers,
    # which then bounds the batches alone (infra/spark.py `arrow_batches_by_records`): rows of a few
    # KB, at most Kafka's 1 MB message each.
    arrow_records_per_batch: int = Field(default=1000, ge=1, le=10_000)
    # Maintenance: vacuum never removes files younger than this (Delta's own floor is one week).
    vacuum_retention_hours: int = Field(default=168, ge=168)
    # Data-quality bounds (the data_quality DAG fails when one is crossed).
    max_lost_fraction: float = Field(default=0.01, ge=0, le=1)
    max_quarantine_growth: int = Field(default=0, ge=0)
    max_clock_offset_ms: float = Field(default=1000.0, gt=0)
    max_clock_rtt_ms: float = Field(default=50.0, gt=0)

    @model_validator(mode="after")
    def _band(self) -> LakeSettings:
        if self.band_low_hz >= self.band_high_hz:
            raise ValueError(
                f"lake.band_low_hz ({self.band_low_hz}) must be below lake.band_high_hz ({self.band_high_hz})"
            )
        if self.notch_hz == 0:
            object.__setattr__(self, "notch_hz", None)
        if self.notch_hz is not None and self.line_filter == "bandstop" and self.bandstop_width_hz / 2 >= self.notch_hz:
            raise ValueError(
                f"lake.bandstop_width_hz ({self.bandstop_width_hz}) must be less than twice lake.notch_hz "
                f"({self.notch_hz}): the band-stop's low edge would be at or below 0 Hz"
            )
        return self


PipelineName = Literal["bandpower_lr", "ssvep_lda"]


class MlSettings(_Section):
    """Training sets, pipelines, the promotion gate and the scorers."""

    # "markers": stimulus markers (the SSVEP task). "motion": still/moving from the room sensors'
    # gyroscope, joined to the windows in lab time. Both label windows through lab-time intervals.
    label_source: Literal["markers", "motion"] = "markers"
    pipelines: list[PipelineName] = Field(default_factory=lambda: list(typing.get_args(PipelineName)))
    # Windows worse than these are left out of training sets.
    max_railed_pct: float = Field(default=1.0, ge=0, le=100)
    max_line_noise_ratio: float = Field(default=0.5, ge=0, le=1)
    max_flat_channels: int = Field(default=0, ge=0)
    # Sessions are held out by a hash of their id, so a session never moves between train and test.
    holdout_fraction: float = Field(default=0.3, gt=0, lt=1)
    cv_folds: int = Field(default=4, ge=2)
    lr_c: float = Field(default=1.0, gt=0)
    lr_max_iter: int = Field(default=2000, ge=10)
    lda_shrinkage: float | Literal["auto"] = "auto"
    # A candidate must beat the champion's held-out balanced accuracy by more than this.
    promotion_margin: float = Field(default=0.0, ge=0, le=1)
    motion_gyro_rad_s: float = Field(default=0.1, gt=0)
    # Live scorer: how often the @champion alias is checked, and how long it waits for a gap.
    reload_interval_s: float = Field(default=2.0, gt=0)
    live_gap_wait_s: float = Field(default=1.0, ge=0)
    live_start: Literal["latest", "earliest"] = "latest"
    # A session whose (task, montage, rate) has no champion yet (ml/montage.py) is scored by
    # filter-bank CCA, which needs no training; "none" leaves it unscored until one is promoted.
    live_fallback: Literal["fbcca", "none"] = "fbcca"
    # The retrain DAG's Asset event fires once this many new labelled windows reached gold.
    retrain_min_new_windows: int = Field(default=200, ge=1)

    @model_validator(mode="after")
    def _shrinkage(self) -> MlSettings:
        if isinstance(self.lda_shrinkage, float) and not 0 <= self.lda_shrinkage <= 1:
            raise ValueError(f"ml.lda_shrinkage must be 'auto' or in [0, 1], got {self.lda_shrinkage}")
        if not self.pipelines:
            raise ValueError("ml.pipelines needs at least one of bandpower_lr, ssvep_lda")
        return self


class DashboardSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=15006, ge=1, le=65535)
    window_s: float = Field(default=10.0, gt=1, le=60)
    # Traces are pushed this often; spectra, head map and health once a second.
    refresh_ms: int = Field(default=100, ge=20, le=2000)
    # A session with no block for this long is shown as stopped.
    stale_after_s: float = Field(default=3.0, gt=0)
    flat_uv: float = Field(default=0.5, ge=0)
    # A channel whose mains power (lake.notch_hz) is more than this share of its power is flagged.
    line_noise_max: float = Field(default=0.5, gt=0, le=1)
    # Samples lost (gaps in the sample index) within this many seconds raise the page's loss alert.
    loss_alert_s: float = Field(default=10.0, gt=0)
    # The room sensors' time series reach back this far.
    sensor_history_s: float = Field(default=600.0, gt=0, le=86_400)
    # The fleet view's start/stop/restart/set-config buttons send hub-signed commands (the hub's
    # keyring signs them); false makes the dashboard read-only for everyone who can reach it.
    allow_commands: bool = True
    # How long the fleet view waits for a device's ack before it says none came.
    command_wait_s: float = Field(default=15.0, gt=0, le=600)


class SecuritySettings(_Section):
    """Record authentication on the lab network (schemas/signing.py; README "Security model")."""

    # Device keys: on the hub every device's (`neurolake keys`), on a Pi its own (`neurolake edge
    # setup`). Relative to paths.home unless absolute.
    keyring: Path = Path("security/keyring.json")
    # Bronze quarantines records that are unsigned or signed by an unknown or revoked key. Only a
    # lake fed by a trusted, authenticated cluster (SASL_SSL) may turn this off.
    require_signed_records: bool = True
    # A hub control record (ack, command) issued further than this from the Pi's lab clock is refused.
    control_max_age_s: float = Field(default=120.0, gt=0)
    # Web UIs and the broker listen on loopback unless this is set (they authenticate nobody).
    allow_unauthenticated_lan: bool = False


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PathSettings(_Section):
    # Relative paths are resolved against the working directory once, at load time.
    home: Path = Path(".neurolake")
    lake_root: Path = Path("lake")
    # The Kafka and Spark jars `make setup` fetched (infra/scripts/fetch_jars.sh): never fetched at run time.
    jars: Path = Path(__file__).resolve().parent.parent / ".jvm"

    @field_validator("home", "lake_root", "jars", mode="before")
    @classmethod
    def _local_paths(cls, value: Any, info: ValidationInfo) -> Any:
        # A URI would silently become a local folder named "s3a:" under the working directory.
        if isinstance(value, str) and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
            raise ValueError(
                f"paths.{info.field_name} must be a local path, not {value!r}: the lake, its checkpoints and "
                "locks are files for now; mount the bucket or shared volume and give the mount's path "
                "(infra/production/README.md, 'The lake on object storage')"
            )
        return value

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"


class Settings(BaseSettings):
    """Every section; :func:`load_settings` is the one way to build it from TOML and the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True, validate_default=True
    )

    kafka: KafkaSettings = KafkaSettings()
    broker: BrokerSettings = BrokerSettings()
    topics: TopicSettings = TopicSettings()
    mlflow: MlflowSettings = MlflowSettings()
    airflow: AirflowSettings = AirflowSettings()
    spark: SparkSettings = SparkSettings()
    clock: ClockSettings = ClockSettings()
    edge: EdgeSettings = EdgeSettings()
    lake: LakeSettings = LakeSettings()
    ml: MlSettings = MlSettings()
    dashboard: DashboardSettings = DashboardSettings()
    security: SecuritySettings = SecuritySettings()
    paths: PathSettings = PathSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only load_settings passes sources; a bare Settings() is the defaults and never reads the
        # environment behind the caller's back (nothing below the CLI does).
        return (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _cluster_defaults(cls, data: Any) -> Any:
        """Defaults that follow from the local cluster's shape, unless set: clients bootstrap from
        every broker node; three nodes keep three copies of each partition, two in sync; with Spark
        workers, the session's master is the local standalone master."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        broker = dict(data.get("broker") or {})
        kafka = dict(data.get("kafka") or {})
        topics = dict(data.get("topics") or {})
        spark = dict(data.get("spark") or {})
        if "bootstrap_servers" not in kafka:
            try:
                kafka["bootstrap_servers"] = BrokerSettings(**broker).bootstrap_servers
            except ValidationError:
                pass  # the broker section's own validation names the problem
        if str(broker.get("nodes", 1)) == "3":
            topics.setdefault("replication_factor", 3)
            topics.setdefault("min_insync_replicas", 2)
        if int(spark.get("workers", 0) or 0) > 0:
            spark.setdefault("master", f"spark://127.0.0.1:{spark.get('master_port', 17077)}")
            # The driver's UI serves the executors' task metrics that `stream status` shows.
            spark.setdefault("ui_enabled", True)
        data.update(kafka=kafka, topics=topics, spark=spark)
        return data

    @model_validator(mode="after")
    def _web_uis_on_loopback(self) -> Settings:
        # MLflow, Airflow and the dashboard have no neurolake login yet: beyond loopback anyone on
        # the lab network could register models (code the scorers would load) or read live EEG.
        for name, host in (
            ("mlflow.host", self.mlflow.host),
            ("airflow.host", self.airflow.host),
            ("dashboard.host", self.dashboard.host),
            ("broker.host", self.broker.host),
            # The presenter's page reports the frames that become signed markers.
            ("edge.stimulus.presenter_host", self.edge.stimulus.presenter_host),
        ):
            if not _is_loopback(host) and not self.security.allow_unauthenticated_lan:
                raise ValueError(
                    f"{name}={host!r} would serve the lab network without a login; keep 127.0.0.1 and reach "
                    "it through an SSH tunnel (ssh -L PORT:127.0.0.1:PORT hub), Pis through `neurolake tls`, "
                    "or set security.allow_unauthenticated_lan=true on a network only you use"
                )
        return self

    @model_validator(mode="after")
    def _distinct_ports(self) -> Settings:
        ports = {
            "broker.port": self.broker.port,
            "broker.controller_port": self.broker.controller_port,
            "mlflow.port": self.mlflow.port,
            "airflow.port": self.airflow.port,
            "airflow.log_server_port": self.airflow.log_server_port,
            "clock.port": self.clock.port,
            "dashboard.port": self.dashboard.port,
            "spark.ui_port": self.spark.ui_port,
            **(
                {
                    "spark.master_port": self.spark.master_port,
                    "spark.master_ui_port": self.spark.master_ui_port,
                    **{f"spark worker {n}": self.spark.worker_port(n) for n in range(1, self.spark.workers + 1)},
                }
                if self.spark.workers
                else {}
            ),
            "edge.stimulus.presenter_port": self.edge.stimulus.presenter_port,
        }
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if port in seen:
                raise ValueError(f"{name} and {seen[port]} are both {port}; give each its own port")
            seen[port] = name
        return self


@functools.cache
def default_ports() -> frozenset[int]:
    """Every port a setting defaults to. A private stack (tests, benches) picks its ports at random
    and sets only those it starts; one that drew a default another setting keeps was refused as a
    clash (a test's controller once drew the presenter's 15010)."""

    def walk(model: type[BaseModel]) -> set[int]:
        found: set[int] = set()
        for name, field in model.model_fields.items():
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                found |= walk(kind)
            elif name.endswith("port") and isinstance(field.default, int) and field.default > 0:
                found.add(field.default)
        return found

    return frozenset(walk(Settings))


def load_settings(
    config_file: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Build and validate the settings once.

    ``config_file`` wins over ``NEUROLAKE_CONFIG``; ``./neurolake.toml`` is read when present.
    Environment variables win over the file. Raises :class:`SettingsError` with the offending key
    and the fix.
    """
    env = dict(os.environ if environ is None else environ)
    base = cwd or Path.cwd()
    explicit = config_file or env.get(ENV_CONFIG_FILE)
    path = Path(explicit) if explicit else Path(DEFAULT_CONFIG_FILE)
    path = path if path.is_absolute() else base / path
    if explicit and not path.exists():
        raise SettingsError(f"config file {path} does not exist; fix the path given by --config or {ENV_CONFIG_FILE}")
    try:
        sources = (CheckedEnvironmentSource(Settings, env), CheckedTomlSource(Settings, path))
        settings = Settings(_build_sources=(sources, {}))
    except ValidationError as exc:
        raise SettingsError(_explain(exc)) from None
    return _resolve_paths(settings, base)


class CheckedEnvironmentSource(PydanticBaseSettingsSource):
    """``NEUROLAKE_<SECTION>__<KEY>`` variables, each checked against the model first.

    pydantic-settings would silently ignore a misspelt variable; here it fails with the nearest real
    setting. Mappings and lists keep the lab's shell-friendly forms (``a=1,b=2`` and ``a,b``) rather
    than JSON.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ walks the variables instead of the fields, to catch unknown names.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        tree: dict[str, Any] = {}
        for key, value in self.environ.items():
            if not key.startswith(ENV_PREFIX) or key == ENV_CONFIG_FILE:
                continue
            dotted = key[len(ENV_PREFIX) :].lower().split("__")
            annotation = _check_known(dotted, source=key)
            parsed: Any = value
            if typing.get_origin(annotation) is Literal and all(
                isinstance(a, int) for a in typing.get_args(annotation)
            ):
                # A variable is text; a choice of numbers (broker.nodes: 1 or 3) is compared as numbers.
                parsed = int(value) if value.strip().lstrip("-").isdigit() else value
            elif typing.get_origin(annotation) is dict:
                parsed = _parse_mapping(value, ".".join(dotted))
            elif typing.get_origin(annotation) is list:
                parsed = [item.strip() for item in value.split(",") if item.strip()]
            _set_nested(tree, dotted, parsed)
        return tree


class CheckedTomlSource(TomlConfigSettingsSource):
    """The TOML file, when present, with unknown keys named before validation (with a suggestion)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        try:
            super().__init__(settings_cls, toml_file=path)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML ({exc}); fix the syntax") from None
        _check_known_tree(self.toml_data, prefix=[], source=str(path))


def _set_nested(tree: dict[str, Any], dotted: list[str], value: Any) -> None:
    node = tree
    for part in dotted[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SettingsError(f"setting {'.'.join(dotted)} conflicts with a scalar value")
    node[dotted[-1]] = value


def _parse_mapping(text: str, name: str) -> dict[str, str]:
    """``eeg.raw=8,markers=1`` from an environment variable; pydantic converts the values."""
    result: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise SettingsError(f"{name} item {item!r} is not NAME=VALUE; write e.g. a=1,b=2")
        result[key.strip()] = value.strip()
    return result


def _fields_of(model: type[BaseModel]) -> dict[str, Any]:
    return dict(model.model_fields)


def _check_known(dotted: list[str], source: str) -> Any:
    """Raise for an unknown dotted setting; return the leaf field's type annotation."""
    model: type[BaseModel] = Settings
    annotation: Any = None
    for depth, part in enumerate(dotted):
        fields = _fields_of(model)
        if part not in fields:
            _unknown(dotted[: depth + 1], list(fields), source)
        annotation = fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif depth + 1 < len(dotted):
            _unknown(dotted[: depth + 2], [], source)
    return annotation


def _check_known_tree(tree: Mapping[str, Any], prefix: list[str], source: str) -> None:
    model: type[BaseModel] = Settings
    for part in prefix:
        section = _fields_of(model)[part].annotation
        assert isinstance(section, type) and issubclass(section, BaseModel), "prefix holds only sections"
        model = section
    fields = _fields_of(model)
    for key, value in tree.items():
        if key not in fields:
            _unknown([*prefix, key], list(fields), source)
        annotation = fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if not isinstance(value, Mapping):
                raise SettingsError(f"setting {'.'.join([*prefix, key])} in {source} must be a table of settings")
            _check_known_tree(value, [*prefix, key], source)


def _unknown(dotted: list[str], candidates: list[str], source: str) -> None:
    name = ".".join(dotted)
    close = difflib.get_close_matches(dotted[-1], candidates, n=1)
    hint = f"; did you mean {'.'.join([*dotted[:-1], close[0]])}?" if close else ""
    env_name = ENV_PREFIX + "__".join(dotted).upper()
    raise SettingsError(f"unknown setting {name} (from {source}, env form {env_name}){hint}")


def _explain(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        env_name = ENV_PREFIX + "__".join(str(part) for part in error["loc"]).upper()
        given = error.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        where = f"{location} / {env_name}" if location else "settings"
        problems.append(f"{where}: {error['msg']}{shown}")
    return "invalid setting " + "; ".join(problems)


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    def absolute(path: Path) -> Path:
        return path if path.is_absolute() else (base / path).resolve()

    home = absolute(settings.paths.home)
    paths = settings.paths.model_copy(
        update={"home": home, "lake_root": absolute(settings.paths.lake_root), "jars": absolute(settings.paths.jars)}
    )
    spool_dir = settings.edge.spool.directory
    spool = settings.edge.spool.model_copy(
        update={"directory": spool_dir if spool_dir.is_absolute() else home / spool_dir}
    )
    edge_update: dict[str, Any] = {"spool": spool}
    if settings.edge.playback_file is not None:
        edge_update["playback_file"] = absolute(settings.edge.playback_file)
    edge = settings.edge.model_copy(update=edge_update)
    keyring = settings.security.keyring
    security = settings.security.model_copy(update={"keyring": keyring if keyring.is_absolute() else home / keyring})
    return settings.model_copy(update={"paths": paths, "edge": edge, "security": security})


def child_environ(settings_environ: Mapping[str, str]) -> dict[str, str]:
    """This process's environment for a child process with its NEUROLAKE_* variables replaced by
    ``settings_environ``: the child reads only the settings it is given, none this process inherited."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return {**inherited, **settings_environ}
