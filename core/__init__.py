"""The base every other package stands on: settings, errors, logging, the stop handler.

Kept small and free of Kafka, Spark and MLflow: the edge Pis import it too.
"""

__version__ = "0.1.0"
