"""The one way to build a Spark session. Jobs receive a session; they never build their own.

``python -m infra.spark`` records the driver JVM's class-data-sharing archive (``make setup`` runs
it): a training session loads the classes a streaming job loads, and the JVM writes them to an
archive at exit. Later sessions map that archive instead of parsing and verifying the same ~10,000
classes from Spark's jars on every start, which is most of a restart's JVM time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ServiceError
from core.settings import Settings, load_settings
from infra.delta import DICTIONARY_COLUMNS
from infra.preflight import check_java, java_executable

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

FILE_SYSTEM_CHECKPOINTS = "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"
# Delta Lake for Spark: its SQL (DESCRIBE HISTORY, OPTIMIZE, VACUUM, MERGE, VERSION AS OF) and catalog.
DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    # Loading a table's state is a Spark job over its log; the default 50 partitions are for tables
    # of millions of files, and made each small-table commit ~10x slower here.
    "spark.databricks.delta.snapshotPartitions": "2",
    # Tables stay readable by delta-rs, DuckDB and Polars: no deletion vectors (a reader feature).
    "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
    # A checkpoint rebuilds the table's whole state (a Spark job); every 10th commit, the default,
    # it took 1-13 s of a 100-headset batch. Readers replay at most 100 small JSON commits instead.
    "spark.databricks.delta.properties.defaults.checkpointInterval": "100",
    # Without Hadoop's native library the default log store starts a `chmod` and a `readlink`
    # process for each log file it writes and renames; the local one renames with java.io.
    "spark.delta.logStore.file.impl": "io.delta.storage.LocalLogStore",
}
# The lake's queries are small and many: adaptive execution re-plans each of Delta's own queries
# (a commit's state reconstruction: 3 jobs instead of 1) and gains nothing at this size.
SMALL_QUERY_CONF = {
    "spark.sql.adaptive.enabled": "false",
    # Micro-batches of thousands of rows: generating and compiling code for each plan and task cost
    # more of the JVM's CPU (a third, in a profile at 20 headsets) than interpreting those rows.
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    # Parquet's dictionary encoding for text columns only (parquet-mr's per-column keys): on sample
    # values a dictionary never pays, and with pyarrow it made silver's files ~50% larger and their
    # writes ~6x slower; a profile of the JVM's Parquet writer found the same hot spot.
    "spark.hadoop.parquet.enable.dictionary": "false",
    **{f"spark.hadoop.parquet.enable.dictionary#{column}": "true" for column in DICTIONARY_COLUMNS},
}
# The one byte limit at which Spark does not measure the Arrow batches it sends to Python workers.
ARROW_BYTES_UNMEASURED = 2**31 - 1


def arrow_batches_by_records(session: SparkSession, records: int) -> None:
    """Arrow batches from ``session``'s jobs to their Python workers closed by row count alone.

    Spark also closes a batch at ``spark.sql.execution.arrow.maxBytesPerBatch`` (64 MB), and
    measures the batch for it after every row: Arrow's measure of a list or text column walks back
    over all its nulls since the last value, so a batch of rows whose columns are mostly null
    (bronze's records of four kinds in one wide row, silver's blocks beside session records) costs
    time quadratic in its rows (`bench/arrow_batch_bench.py`). At the one value Spark treats as no
    limit it measures nothing; ``records`` then bounds a batch's memory. For the lake's EEG queries
    only: a camera frame may be 900 KB.
    """
    session.conf.set("spark.sql.execution.arrow.maxBytesPerBatch", str(ARROW_BYTES_UNMEASURED))
    session.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(records))


# Option keys whose values Spark must not print in plans and logs (Kafka credentials, PEM keys).
REDACTED_OPTIONS = "(?i)url|password|secret|token|jaas|keystore|truststore"
# Every session's Python workers fork from PySpark's daemon run from the installed, compiled PySpark.
PYTHON_DAEMON_MODULE = "infra.python_daemon"


def spark_environment(settings: Settings) -> dict[str, str]:
    """Variables Spark's launcher and Python workers read from the process environment."""
    env = {
        # Without these, Python workers fail with "Timed out while waiting for the Python worker
        # to connect back", and the driver may bind a non-loopback address.
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    java = java_executable(settings)
    env["JAVA_HOME"] = str(java.resolve().parent.parent)
    return env


def class_archive_path(settings: Settings) -> Path:
    """Where this environment's archive lives: one per Spark version and Java build, since an
    archive is only valid for the jars and the JVM that wrote it."""
    import pyspark

    java = java_executable(settings).resolve()
    key = hashlib.sha256(f"{java}:{java.stat().st_mtime_ns}:{pyspark.__version__}".encode()).hexdigest()[:12]
    return Path(sys.prefix) / "var" / "neurolake" / f"spark-{pyspark.__version__}-{key}.jsa"


def driver_java_options(settings: Settings, archive: bool = True) -> str | None:
    """``spark.java_options`` plus, when ``archive`` and recorded, the class archive to start from."""
    options = [settings.spark.java_options.strip()]
    if archive and settings.spark.class_archive and class_archive_path(settings).is_file():
        # -Xshare:auto (the default) falls back to a plain start if the archive does not match.
        options.append(f"-XX:SharedArchiveFile={class_archive_path(settings)} -Xlog:cds=off -Xlog:cds+dynamic=off")
    return " ".join(option for option in options if option) or None


def spark_classpath(settings: Settings) -> str:
    """Spark's Kafka source and Delta Lake, from the folder `make setup` filled (infra/jvm/spark/
    pom.xml): Spark never downloads anything at run time. On the JVMs' own class path rather than
    ``spark.jars``: the class-data-sharing archive can hold classes of the application class loader
    only, and Delta's and Kafka's are most of what a streaming start loads."""
    jars = sorted((settings.paths.jars / "spark").glob("*.jar"))
    if not any(j.name.startswith("delta-spark_") for j in jars) or not any(
        j.name.startswith("spark-sql-kafka") for j in jars
    ):
        raise ServiceError(
            f"Spark's Kafka and Delta jars are missing from {settings.paths.jars / 'spark'}; run `make setup` "
            f"(it fetches them once with Maven: infra/scripts/fetch_jars.sh)"
        )
    return os.pathsep.join(str(j) for j in jars)


def build_spark_session(
    settings: Settings,
    app_name: str = "neurolake",
    extra_conf: dict[str, str] | None = None,
    java_options: str | None = None,
) -> SparkSession:
    """The lake's Spark session: Delta's catalog, the Kafka and Delta jars from ``paths.jars``, the
    small-batch configuration, and on a standalone master executors of the workers' size."""
    check_java(settings)
    # Spark's launcher reads these from the environment; this is the one place that sets them.
    os.environ.update(spark_environment(settings))
    from pyspark.sql import SparkSession

    spark_conf = settings.spark
    classpath = spark_classpath(settings)
    java_options = driver_java_options(settings) if java_options is None else java_options
    builder = (
        SparkSession.builder.appName(app_name)
        .master(spark_conf.master)
        .config("spark.driver.memory", spark_conf.driver_memory)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", str(spark_conf.shuffle_partitions))
        .config("spark.default.parallelism", str(spark_conf.shuffle_partitions))
        # VACUUM lists a table's folders in a Spark job of this many tasks (default 10,000): on
        # local[2] that was ~50 s per table of a handful of files, 10 min for the lake's 12 tables.
        .config("spark.sql.sources.parallelPartitionDiscovery.parallelism", str(spark_conf.shuffle_partitions))
        .config("spark.ui.enabled", str(spark_conf.ui_enabled).lower())
        .config("spark.ui.port", str(spark_conf.ui_port))
        # A stream runs a few stages a second: keep the UI's memory (and its REST lists) short.
        .config("spark.ui.retainedStages", "200")
        .config("spark.ui.retainedJobs", "200")
        .config("spark.sql.ui.retainedExecutions", "50")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.local.dir", str(settings.paths.home / "spark-tmp"))
        .config("spark.sql.warehouse.dir", str(settings.paths.home / "spark-warehouse"))
        # Without Hadoop's native library, the default checkpoint manager starts a `readlink`
        # process for each path it renames (16 per micro-batch) and the checksummed local file
        # system a `chmod` for each .crc file: ~70 ms of every micro-batch of every query. The file
        # system based manager renames with java.io, and a local rename is atomic all the same.
        .config("spark.sql.streaming.checkpointFileManagerClass", FILE_SYSTEM_CHECKPOINTS)
        .config("spark.hadoop.fs.file.impl", "org.apache.hadoop.fs.RawLocalFileSystem")
        .config("spark.driver.extraClassPath", classpath)
        # Executors on a cluster find the same jars at the same path (infra/production/README.md).
        .config("spark.executor.extraClassPath", classpath)
        .config("spark.sql.redaction.options.regex", REDACTED_OPTIONS)
        .config("spark.python.daemon.module", PYTHON_DAEMON_MODULE)
    )
    for key, value in {**DELTA_CONF, **SMALL_QUERY_CONF, **standalone_conf(settings)}.items():
        builder = builder.config(key, value)
    if java_options:
        builder = builder.config("spark.driver.extraJavaOptions", java_options)
    for key, value in {**spark_conf.conf, **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def start_python_workers(spark: Any) -> Future[set[int]]:
    """Start Spark's Python daemon and one worker per task slot now, in the background, and return
    the daemon's process ids when they are up.

    Spark starts the daemon when a task first needs a Python worker: in the stream, bronze's first
    task, after the query has planned its first batch and its Kafka consumer has connected, so the
    daemon's start-up (~1.5-2 s of imports on the 2-core machine) lay on the path to bronze's first
    commit. A job of one empty Arrow task per slot, run while the queries plan, starts it earlier;
    the queries' tasks then reuse its idle workers. It has to be an Arrow job: an RDD's Python
    function carries other environment variables, and Spark keys its daemons by them, so it would
    start a second daemon."""
    from infra.python_daemon import DAEMON_PID_SCHEMA, report_daemon

    ready: Future[set[int]] = Future()
    slots = max(1, spark.sparkContext.defaultParallelism)

    def run() -> None:
        try:
            spark.sparkContext.setJobDescription("start the Python workers")
            rows = spark.range(slots, numPartitions=slots).mapInArrow(report_daemon, DAEMON_PID_SCHEMA).collect()
            ready.set_result({row.daemon_pid for row in rows})
        except Exception as exc:  # the queries' first tasks start the daemon themselves then
            ready.set_exception(exc)

    threading.Thread(target=run, name="start-python-workers", daemon=True).start()
    return ready


def standalone_conf(settings: Settings) -> dict[str, str]:
    """On a standalone master (the local cluster's, or any): executors of the workers' size and the
    driver's JVM options, every worker's cores for the lake, and this venv's Python in the executors
    (the project is installed in it, so the tasks' functions import there as they do on the driver)."""
    spark = settings.spark
    if not spark.master.startswith("spark://"):
        return {}
    import sys

    conf = {
        # The executors do the tasks the driver does in local mode: the same JIT (without the archive,
        # which is the driver's own).
        **({"spark.executor.extraJavaOptions": spark.java_options.strip()} if spark.java_options.strip() else {}),
        "spark.executor.memory": spark.executor_memory,
        "spark.executor.cores": str(spark.worker_cores),
        "spark.pyspark.python": sys.executable,
        "spark.executorEnv.PYSPARK_PYTHON": sys.executable,
    }
    if spark.workers:
        conf["spark.cores.max"] = str(spark.workers * spark.worker_cores)
    return conf


def register_lake_tables(spark: SparkSession, lake_root: Path, names: Iterable[str] | None = None) -> list[str]:
    """Name the lake's Delta tables in the session's catalog as ``bronze.*``, ``silver.*`` and
    ``gold.*`` (external tables over their folders, so Spark SQL, ``DESCRIBE HISTORY``, ``OPTIMIZE``,
    ``VACUUM`` and ``VERSION AS OF`` work on them by name). ``names``: only these (each registration
    reads its table's log). Returns the names registered; tables without a first commit are not."""
    from schemas.catalog import LAYERS, TABLES

    registered = []
    for layer in LAYERS:
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {layer}")
    for name in sorted(set(names) if names is not None else TABLES):
        spec = TABLES.get(name)
        if spec is None or not (spec.path(lake_root) / "_delta_log").is_dir():
            continue
        location = str(spec.path(lake_root)).replace("'", "\\'")
        spark.sql(f"CREATE TABLE IF NOT EXISTS {name} USING DELTA LOCATION '{location}'")
        registered.append(name)
    return registered


def _run_until(query: Any, done: Callable[[], bool], limit_s: float = 120.0) -> None:
    import time

    deadline = time.monotonic() + limit_s
    while not done() and time.monotonic() < deadline and query.exception() is None:
        time.sleep(0.1)
    query.stop()


def _training_workload(spark: SparkSession, settings: Settings, scratch: Path) -> None:
    """What a lake start loads, on a private broker: Spark's Kafka source through a Python decode
    step (``mapInArrow``) into Delta with idempotent appends, and Delta's streaming source through a
    per-key state step (``applyInPandasWithState``) into Delta again, all from ``foreachBatch``.
    (The code generator's ~330 classes come from a signed jar, which an archive cannot hold.)"""
    import pandas as pd
    from confluent_kafka import Producer
    from pyspark.sql.streaming.state import GroupStateTimeout

    from infra.kafka import ensure_topics
    from infra.processes import ProcessSupervisor
    from infra.stack import broker_spec

    supervisor = ProcessSupervisor(settings.paths.run_dir, settings.paths.log_dir)
    broker = broker_spec(settings)
    supervisor.start(broker)
    try:
        ensure_topics(settings)
        producer = Producer(settings.kafka.producer_config())
        for n in range(200):
            producer.produce("eeg.raw", key=str(n % 4).encode(), value=n.to_bytes(8, "little"))
        producer.flush(30)

        def passthrough(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            yield from batches

        table = str(scratch / "bronze")
        written: list[int] = []

        def to_delta(batch: DataFrame, batch_id: int) -> None:
            frame = batch.select("partition", "offset", "value").mapInArrow(
                passthrough, "partition int, offset long, value binary"
            )
            frame.write.format("delta").mode("append").option("txnAppId", "train").option("txnVersion", batch_id).save(
                table
            )
            written.append(batch_id)

        kafka = spark.readStream.format("kafka").option("subscribe", "eeg.raw").option("startingOffsets", "earliest")
        for key, value in settings.kafka.java_client_config().items():
            kafka = kafka.option(f"kafka.{key}", value)
        query = kafka.load().writeStream.foreachBatch(to_delta).option("checkpointLocation", str(scratch / "k")).start()
        _run_until(query, lambda: bool(written))

        def count(key: tuple[int], frames: Iterator[pd.DataFrame], state: Any) -> Iterator[pd.DataFrame]:
            total = sum(len(f) for f in frames) + (state.get[0] if state.exists else 0)
            state.update((total,))
            state.setTimeoutDuration(60_000)
            yield pd.DataFrame({"partition": [key[0]], "n": [total]})

        counted: list[int] = []

        def counts_to_delta(batch: DataFrame, batch_id: int) -> None:
            batch.write.format("delta").mode("append").save(str(scratch / "silver"))
            counted.append(batch_id)

        stateful = (
            spark.readStream.format("delta")
            .load(table)
            .groupBy("partition")
            .applyInPandasWithState(
                count, "partition int, n long", "n long", "append", GroupStateTimeout.ProcessingTimeTimeout
            )
        )
        query = (
            stateful.writeStream.foreachBatch(counts_to_delta).option("checkpointLocation", str(scratch / "d")).start()
        )
        _run_until(query, lambda: bool(counted))
        spark.sql(f"DESCRIBE HISTORY delta.`{table}`").collect()
    finally:
        supervisor.stop(broker)


def record_class_archive(settings: Settings) -> Path:
    """Write this environment's archive (a training session in a child process; the JVM writes the
    archive when it exits) and move it into place only once complete."""
    target = class_archive_path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    result = subprocess.run(
        [sys.executable, "-m", "infra.spark", "--train", str(partial)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        # The training session makes its own settings; the JVM that writes the archive must be the
        # one it is named for (spark.java_home), or the stream's JVM refuses it and starts ~3 s slower.
        env={**os.environ, **spark_environment(settings)},
    )
    if result.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise ServiceError(
            f"recording Spark's class archive failed (exit {result.returncode}): {result.stderr.strip()[-400:]}"
        )
    partial.replace(target)
    for stale in target.parent.glob("spark-*.jsa"):  # archives of an older Spark or Java: ~170 MB each
        if stale != target:
            stale.unlink(missing_ok=True)
    return target


def _train(partial: Path) -> None:
    from infra.ports import free_ports

    with tempfile.TemporaryDirectory(prefix="neurolake-spark-train-") as scratch:
        # A private broker on free ports, in the scratch folder: a lab stack may be running.
        port, controller, ui = free_ports(3)
        settings = load_settings(
            environ={
                "NEUROLAKE_PATHS__HOME": scratch,
                "NEUROLAKE_PATHS__LAKE_ROOT": f"{scratch}/lake",
                "NEUROLAKE_BROKER__PORT": str(port),
                "NEUROLAKE_BROKER__CONTROLLER_PORT": str(controller),
                "NEUROLAKE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
                "NEUROLAKE_SPARK__UI_PORT": str(ui),
            },
            cwd=Path(scratch),
        )
        spark = build_spark_session(
            settings,
            "neurolake-class-archive",
            java_options=f"{driver_java_options(settings, archive=False) or ''} -XX:ArchiveClassesAtExit={partial}",
        )
        _training_workload(spark, settings, Path(scratch))
        # PySpark keeps the JVM's Popen only on this private py4j attribute, and the archive is
        # written as that JVM exits: no public handle exists to wait on it.
        jvm = spark.sparkContext._gateway.proc  # type: ignore[union-attr]
        spark.stop()
        # The JVM writes the archive as it exits, after this process would: end it and wait.
        jvm.stdin.close()
        jvm.wait(timeout=300)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--train"] and len(args) == 2:
        _train(Path(args[1]))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = load_settings()
    target = class_archive_path(settings)
    if target.is_file() and args != ["--again"]:
        log.info("Spark class archive: %s (recorded before; --again records it anew)", target)
        return 0
    target = record_class_archive(settings)
    log.info("Spark class archive: %s (%.0f MB)", target, target.stat().st_size / 1e6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
