#!/usr/bin/env bash
# One-time (and idempotent) machine set-up for neurolake: Python 3.11 venv at .venv/, every package
# from requirements.lock (hash-checked), the project in editable mode, a Java 17+ check, Maven, and
# the pinned Kafka and Spark jars (infra/scripts/fetch_jars.sh, checksums checked) in .jvm/.
# Called by `make`; safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=.venv
UV_VERSION=0.9.30
say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 2; }

pick_python() {
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
  PY=$(pick_python) || die "Python 3.11 not found (the lock file is for 3.11); install python3.11 or set PYTHON=/path/to/python3.11"
  say "creating $VENV with $PY"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi

if ! "$VENV/bin/uv" --version 2>/dev/null | grep -q "$UV_VERSION"; then
  say "installing uv $UV_VERSION into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi

say "installing locked packages (requirements.lock, hash-checked)"
"$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --require-hashes -r requirements.lock
"$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --no-deps -e .
# Bytecode now, for every package (files already compiled are skipped): uv leaves it to the first
# import, and where PYTHONDONTWRITEBYTECODE is set (CI, containers) nothing is ever cached, so each
# process compiled all it imported: `import mlflow, sklearn` took 23 s here, 9 s compiled.
say "compiling the packages' bytecode"
"$VENV/bin/python" -m compileall -q -j 0 "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

if ! command -v java >/dev/null 2>&1 && [ -z "${JAVA_HOME:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "Java not found; installing openjdk-17-jre-headless with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  else
    die "Java 17+ not found (Spark needs it); install openjdk-17-jre-headless or set JAVA_HOME"
  fi
fi
JAVA_BIN=${JAVA_HOME:+$JAVA_HOME/bin/}java
JAVA_MAJOR=$("$JAVA_BIN" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
[ "${JAVA_MAJOR:-0}" -ge 17 ] || die "Java ${JAVA_MAJOR:-?} found; Spark needs 17+ (install openjdk-17-jre-headless or set JAVA_HOME)"

# Maven fetches the Kafka broker and Spark's Kafka and Delta jars, once (never at run time).
if ! command -v mvn >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "Maven not found; installing maven with apt-get (it fetches the Kafka and Spark jars once)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven >/dev/null
  else
    die "Maven not found; install it (apt-get install maven): it fetches the Kafka and Spark jars once"
  fi
fi
infra/scripts/fetch_jars.sh

# The dashboard's browser test drives Debian's Chromium (no browser download at run time).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "Chromium not found; installing chromium and chromium-driver with apt-get (dashboard tests)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    say "warning: chromium/chromedriver missing; the dashboard browser test will fail (apt-get install chromium chromium-driver)"
  fi
fi

# Spark's driver JVM starts from a class-data-sharing archive recorded for this Spark and Java
# (about 2 s less to a session and 1 s less to its first job); without it Spark still starts, only slower.
"$VENV/bin/python" -m infra.spark || say "warning: could not record Spark's class archive; Spark will start without it"

touch "$VENV/.neurolake-installed"
say "ready: $VENV/bin/neurolake (Java $JAVA_MAJOR, Kafka and Spark jars in .jvm/)"
