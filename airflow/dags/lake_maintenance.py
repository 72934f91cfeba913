"""lake_maintenance: hourly compaction of small files, a checkpoint per table, and a vacuum that
keeps ``lake.vacuum_retention_hours`` of history (never below Delta's one-week floor)."""

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
    def compact() -> dict:
        from batch_jobs import tasks

        return tasks.compact(tasks.settings())

    @task
    def checkpoint() -> dict:
        from batch_jobs import tasks

        return tasks.checkpoint(tasks.settings())

    @task
    def vacuum() -> dict:
        from batch_jobs import tasks

        return tasks.vacuum(tasks.settings())

    compact() >> checkpoint() >> vacuum()


lake_maintenance()
