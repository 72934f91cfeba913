"""Spark Structured Streaming jobs: Kafka source, bronze/silver/gold, scoring."""
