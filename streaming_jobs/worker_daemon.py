"""Spark's Python worker daemon with the sources' modules already imported.

Spark forks every Python worker from one daemon process, and while the daemon starts no other
Python worker can be made (Spark creates workers under one lock): the queries' planning waits for
it. So the daemon imports what every query's first task needs (pyspark's worker, pyarrow, the two
sources: about 1 s) and no more. The session processor's scipy and pandas (about 2.5 s more) are
imported by each worker on its first silver task instead: preloading them here delayed bronze's
first commit after a restart by as much, and bronze's commit is what frees the Pis' spools.
"""

# Imported for the forked workers, not used here.
from pyspark import daemon

import streaming_jobs.bronze_source
import streaming_jobs.kafka_source  # noqa: F401

if __name__ == "__main__":
    daemon.manager()
