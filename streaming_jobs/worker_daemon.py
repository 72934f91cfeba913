"""Spark's Python worker daemon with the streaming jobs' modules already imported.

Spark forks every Python worker from one daemon process. The stock daemon imports almost nothing,
so each fresh worker spent about 3 s importing scipy.signal, pyarrow and the session processor
before its first task: the first silver batch after every restart paid it once per core. Imported
here, before the daemon forks, the workers inherit them.
"""

from pyspark import daemon

# Imported for the forked workers, not used here.
import streaming_jobs.bronze
import streaming_jobs.bronze_source
import streaming_jobs.kafka_source
import streaming_jobs.silver_gold  # noqa: F401

if __name__ == "__main__":
    daemon.manager()
