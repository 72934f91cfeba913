"""retrain: build a training set per montage from gold -> train candidates -> evaluate against that
montage's @champion -> gate.

Runs daily, and whenever ``data_quality`` reports enough new labelled windows in gold (an event
on the gold.eeg_windows Asset). Task bodies are project functions (``batch_jobs.tasks``).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable

from batch_jobs.assets import GOLD_WINDOWS


@dag(
    dag_id="retrain",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 3 * * *", timezone="UTC"), assets=[GOLD_WINDOWS]),
    # No start date: unpausing the DAG (the demo does, after triggering a run) schedules nothing before
    # the next 03:00. With one, the scheduler ran the last 03:00 at once and the triggered run waited
    # for it (max_active_runs=1), doubling the demo's retrain.
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0, "execution_timeout": timedelta(minutes=30)},
    tags=["neurolake", "models"],
    doc_md=__doc__,
)
def retrain() -> None:
    # One mapped instance per (task, montage, rate) in gold: each montage's model on its own.
    @task
    def build_training_set() -> list[dict]:
        from batch_jobs import tasks

        return tasks.build_training_sets(tasks.settings())

    @task
    def train(training_set: dict) -> dict:
        from batch_jobs import tasks

        return tasks.train(tasks.settings(), training_set["path"])

    @task
    def evaluate(trained: dict) -> dict:
        from batch_jobs import tasks

        return tasks.evaluate(tasks.settings(), trained["path"], trained["registered_version"])

    @task
    def promote(evaluated: dict) -> dict:
        from batch_jobs import tasks

        return tasks.promote(tasks.settings(), evaluated)

    trained = train.expand(training_set=build_training_set())
    promote.expand(evaluated=evaluate.expand(trained=trained))


retrain()
