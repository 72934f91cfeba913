"""retrain: build a training set per montage from gold -> train candidates -> evaluate against that
montage's @champion -> gate.

Runs daily (settings: ``airflow.retrain_cron``), and whenever ``data_quality`` reports enough new
labelled windows in gold (an event on the gold.eeg_windows Asset). Task bodies are project functions (``batch_jobs.tasks``).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable

from batch_jobs.assets import GOLD_WINDOWS
from core.settings import load_settings

# A daily run when settings give one (airflow.retrain_cron); new labelled windows in gold always
# trigger one. Unpausing a DAG with a cron schedule runs its latest past slot at once (catchup=False
# takes the newest slot, start date or not), so the demo, which triggers a run and then unpauses,
# runs its stack without one: its run waited 50 s behind that slot's whole retrain
# (max_active_runs=1).
RETRAIN_CRON = load_settings().airflow.retrain_cron


@dag(
    dag_id="retrain",
    schedule=(
        AssetOrTimeSchedule(timetable=CronTriggerTimetable(RETRAIN_CRON, timezone="UTC"), assets=[GOLD_WINDOWS])
        if RETRAIN_CRON
        else [GOLD_WINDOWS]
    ),
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
