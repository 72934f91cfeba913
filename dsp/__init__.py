"""Pure signal maths shared by the lake (Spark), the live scorer and the dashboard.

numpy/scipy only: no Kafka, Spark or MLflow import. Every streaming function takes its state and
returns the new state, so a recording processed in any chunking gives the one-pass result.
"""
