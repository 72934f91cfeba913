"""Spark's Python worker daemon for the stream, with the stream's task modules imported once.

PySpark forks every Python worker from one daemon process, and each worker then imports what its
first task's function needs: ~1 s for silver's (scipy, pandas, the session processor) on the 2-core
machine, ~0.35 s for bronze's. A start runs six such workers within seconds (bronze's two, silver's
four: two tasks, each a stateful step and a writer), all while the JVM warms up and bronze drains
the start-up backlog. Imported here once, before the daemon forks, every worker starts with them
(shared copy-on-write), frozen out of the collections PySpark runs after each task
(:mod:`infra.python_workers`). The price is paid once, and the stream pays it while its JVM starts:
it starts this daemon with its own process (``--warm``), and the daemon that Spark launches later
hands over to it (:func:`infra.python_daemon.warm_daemon`).

The daemon runs from the installed, compiled PySpark as every session's does (:mod:`infra.python_daemon`).
"""

import sys

from infra.python_daemon import main

# What the stream's task functions need: bronze's decode and write, silver/gold's stateful step (its
# pandas frames) and writer.
TASK_MODULES = ("pandas", "pyspark.sql.pandas.serializers", "streaming_jobs.bronze", "streaming_jobs.silver_gold")


if __name__ == "__main__":
    main(sys.argv[1:], TASK_MODULES)
