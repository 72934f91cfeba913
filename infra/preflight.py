"""Checks run before anything starts, so a missing prerequisite leaves nothing half-started."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from core.errors import ServiceError
from core.settings import Settings

_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


def java_executable(settings: Settings, environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    home = settings.spark.java_home or (Path(env["JAVA_HOME"]) if env.get("JAVA_HOME") else None)
    if home is not None:
        candidate = home / "bin" / "java"
        if not candidate.is_file():
            raise ServiceError(
                f"Java not found at {candidate} (spark.java_home or JAVA_HOME); install "
                "openjdk-17-jre-headless or set NEUROLAKE_SPARK__JAVA_HOME to a Java 17+ home"
            )
        return candidate
    found = shutil.which("java", path=env.get("PATH"))
    if found is None:
        raise ServiceError(
            "Java not found on PATH (Spark needs Java 17+); install openjdk-17-jre-headless "
            "or set NEUROLAKE_SPARK__JAVA_HOME"
        )
    return Path(found)


def check_java(settings: Settings, environ: dict[str, str] | None = None) -> int:
    """Return the Java major version, or raise if it is missing or older than Spark needs."""
    java = java_executable(settings, environ)
    try:
        output = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30, check=False).stderr
    except OSError as exc:
        raise ServiceError(f"Java at {java} does not run ({exc}); reinstall Java 17+") from None
    match = _JAVA_VERSION.search(output)
    if not match:
        raise ServiceError(f"cannot read the Java version from `{java} -version`: {output.strip()!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8" style
        major = int(match.group(2))
    if major < settings.spark.min_java_version:
        raise ServiceError(
            f"Java {major} at {java} is too old; Spark needs Java {settings.spark.min_java_version}+ "
            "(set NEUROLAKE_SPARK__JAVA_HOME)"
        )
    return major
