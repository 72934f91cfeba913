#!/usr/bin/env bash
# The image's entrypoint. Spark on Kubernetes starts each executor pod as `<entrypoint> executor`
# and describes it in SPARK_* variables (the contract of Spark's own image, whose script the pip
# wheel does not ship); anything else runs as given (`neurolake ...`, `mlflow server`, `airflow ...`).
set -euo pipefail

if [ "${1:-}" != "executor" ]; then
  exec "$@"
fi

: "${SPARK_HOME:?SPARK_HOME must name the pyspark package folder}"
# spark.executor.extraJavaOptions and Spark's own options arrive as SPARK_JAVA_OPT_0, _1, ... in order.
java_opts=()
while IFS= read -r name; do
  java_opts+=("${!name}")
done < <(compgen -e | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n)

# SPARK_CLASSPATH is spark.executor.extraClassPath: the Kafka and Delta jars at the driver's path.
classpath="${SPARK_CLASSPATH:+$SPARK_CLASSPATH:}$SPARK_HOME/jars/*"

exec "${JAVA_HOME:?JAVA_HOME must be set}/bin/java" \
  "${java_opts[@]}" \
  "-Xms$SPARK_EXECUTOR_MEMORY" "-Xmx$SPARK_EXECUTOR_MEMORY" \
  -cp "$classpath" \
  org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
  --driver-url "$SPARK_DRIVER_URL" \
  --executor-id "$SPARK_EXECUTOR_ID" \
  --cores "$SPARK_EXECUTOR_CORES" \
  --app-id "$SPARK_APPLICATION_ID" \
  --hostname "$SPARK_EXECUTOR_POD_IP" \
  --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" \
  --podName "$SPARK_EXECUTOR_POD_NAME"
