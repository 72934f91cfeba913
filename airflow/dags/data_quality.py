"""data_quality: hourly counts, gaps, quarantine growth and clock offsets, failing loudly past a
bound; then, if enough new labelled windows reached gold, an event on the gold Asset (-> retrain)."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowSkipException

from batch_jobs.assets import GOLD_WINDOWS


@dag(
    dag_id="data_quality",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0},
    tags=["neurolake", "lake"],
    doc_md=__doc__,
)
def data_quality() -> None:
    @task
    def check() -> dict:
        from batch_jobs import tasks

        return tasks.data_quality(tasks.settings())

    @task(outlets=[GOLD_WINDOWS])
    def new_labelled_windows() -> dict:
        from batch_jobs import tasks

        found = tasks.new_labelled_windows(tasks.settings())
        if not found["trigger"]:
            raise AirflowSkipException(f"{found['since_last']} new labelled windows; not enough to retrain")
        return found

    check() >> new_labelled_windows()


data_quality()
