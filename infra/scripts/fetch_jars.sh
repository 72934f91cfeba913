#!/usr/bin/env bash
# The JVM artifacts neurolake runs from, fetched once at set-up and never at run time:
#   .jvm/kafka  Apache Kafka's broker and tools (infra/jvm/kafka/pom.xml, with their dependencies)
#   .jvm/spark  Spark's Kafka source and Delta Lake for Spark (infra/jvm/spark/pom.xml, named jars only)
# Maven checks each download against Maven Central's checksum (--strict-checksums); then every jar
# in both folders must match infra/jvm/jars.sha256, and no jar may be missing or extra. After a
# change to a pom, `infra/scripts/fetch_jars.sh --update-checksums` rewrites that list (review it).
set -euo pipefail
cd "$(dirname "$0")/../.."
JVM_DIR=${NEUROLAKE_JVM_DIR:-.jvm}
SUMS=infra/jvm/jars.sha256
say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 2; }

command -v mvn >/dev/null 2>&1 || die "Maven (mvn) not found; it fetches the Kafka and Spark jars once (apt-get install maven)"

listing() { (cd "$JVM_DIR" && find kafka spark -name '*.jar' -type f | LC_ALL=C sort | xargs sha256sum); }

if [ "${1:-}" != "--update-checksums" ] && [ -d "$JVM_DIR/kafka" ] && [ -d "$JVM_DIR/spark" ] && diff -q <(listing) "$SUMS" >/dev/null 2>&1; then
  exit 0  # already fetched and verified
fi

staging="$JVM_DIR.partial"
rm -rf "$staging"
mkdir -p "$staging"
for part in kafka spark; do
  say "fetching the $part jars with Maven (infra/jvm/$part/pom.xml)"
  transitive=$([ "$part" = spark ] && echo true || echo false)
  mvn -B -q -Dstyle.color=never --strict-checksums -f "infra/jvm/$part/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$PWD/$staging/$part" -DincludeScope=runtime -DexcludeTransitive="$transitive" \
    || die "Maven could not fetch the $part jars (infra/jvm/$part/pom.xml); is Maven Central reachable?"
done
rm -rf "$JVM_DIR"
mv "$staging" "$JVM_DIR"
if [ "${1:-}" = "--update-checksums" ]; then
  listing > "$SUMS"
  say "wrote $SUMS ($(wc -l < "$SUMS") jars)"
  exit 0
fi
if ! diff <(listing) "$SUMS" >&2; then
  rm -rf "$JVM_DIR"
  die "the fetched jars differ from $SUMS (above: < fetched, > expected); a pom changed without --update-checksums, or a download is not what it was"
fi
say "jars ready in $JVM_DIR ($(wc -l < "$SUMS") verified)"
