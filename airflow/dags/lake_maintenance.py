"""lake_maintenance: hourly, Delta's own SQL through Spark: ``OPTIMIZE ... ZORDER BY`` compacts each
table's micro-batch files clustered by what readers filter on, then ``VACUUM`` deletes files older
than ``lake.vacuum_retention_hours`` (never below Delta's one-week floor). Delta writes a checkpoint
every 10 commits by itself."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task


@dag(
    dag_id="lake_maintenance",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    tags=["neurolake", "lake"],
    doc_md=__doc__,
)
def lake_maintenance() -> None:
    @task
    def optimize() -> dict:
        from batch_jobs import tasks

        return tasks.optimize(tasks.settings())

    @task
    def vacuum() -> dict:
        from batch_jobs import tasks

        return tasks.vacuum(tasks.settings())

    optimize() >> vacuum()


lake_maintenance()
