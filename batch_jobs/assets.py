"""The lake's tables as Airflow Assets, declared once for every DAG (needs the airflow extra)."""

from airflow.sdk import Asset

GOLD_WINDOWS = Asset(name="gold.eeg_windows", uri="delta://neurolake/gold/eeg_windows")
GOLD_PREDICTIONS = Asset(name="gold.predictions", uri="delta://neurolake/gold/predictions")
