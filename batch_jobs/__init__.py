"""Batch jobs: training sets, Delta maintenance, backfill/replay, import and export, quality checks."""
