"""Java, Maven and keytool on this machine; the server's jars fetched from Maven Central once."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from keyart.app.cassandra_node.common import (
    CASSANDRA_VERSION,
    DEPENDENCY_PLUGIN,
    MAVEN_CENTRAL,
    CassandraNodeError,
    MissingToolError,
    _locked,
    _tail,
    default_cache_dir,
)


def _java_major(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def find_java() -> str:
    """A Java 17 binary: $JAVA_HOME, then PATH, then /usr/lib/jvm/*17*."""
    candidates: list[str] = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(on_path)
    candidates += [str(p) for p in sorted(Path("/usr/lib/jvm").glob("*17*/bin/java"))]
    seen: list[str] = []
    for java in candidates:
        if not os.access(java, os.X_OK):
            continue
        major = _java_major(java)
        if major == 17:
            return java
        seen.append(f"{java} is Java {major}")
    found = f" ({'; '.join(seen)})" if seen else ""
    raise MissingToolError(
        f"Cassandra {CASSANDRA_VERSION} needs Java 17: install openjdk-17-jre-headless (or set JAVA_HOME){found}"
    )


def _keytool(java: str) -> str:
    keytool = Path(os.path.realpath(java)).parent / "keytool"
    if keytool.exists():
        return str(keytool)
    found = shutil.which("keytool")
    if not found:
        raise MissingToolError("--tls needs keytool: install openjdk-17-jdk-headless")
    return found


def _require_mvn() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise MissingToolError("fetching the Cassandra jars needs Maven: install maven")
    return mvn


# ---------------------------------------------------------------- jars


_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.keyart</groupId>
  <artifactId>cassandra-server-classpath</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""

# Some poms in the tree declare their own repositories; send every request to Central.
_SETTINGS = """<?xml version="1.0" encoding="UTF-8"?>
<settings xmlns="http://maven.apache.org/SETTINGS/1.2.0">
  <mirrors>
    <mirror>
      <id>central-only</id>
      <mirrorOf>*</mirrorOf>
      <url>{central}</url>
    </mirror>
  </mirrors>
</settings>
"""


def fetch_jars(
    version: str = CASSANDRA_VERSION,
    cache_dir: Path | None = None,
    *,
    maven_repo: Path | None = None,
) -> tuple[Path, float | None]:
    """The server's classpath directory, fetched with Maven unless cached.

    Returns (lib dir, seconds Maven took or None when the cache was used). ``maven_repo``
    overrides Maven's local repository (default ~/.m2/repository).
    """
    root = (cache_dir or default_cache_dir()) / version
    lib = root / "lib"
    main_jar = lib / f"cassandra-all-{version}.jar"
    if main_jar.is_file():
        return lib, None
    with _locked(root / ".lock"):
        if main_jar.is_file():  # another process fetched it meanwhile
            return lib, None
        mvn = _require_mvn()
        work = root / "maven"
        work.mkdir(parents=True, exist_ok=True)
        (work / "pom.xml").write_text(_POM.format(version=version))
        (work / "settings.xml").write_text(_SETTINGS.format(central=MAVEN_CENTRAL))
        tmp = root / "lib.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn, "-B", "-q", "-Dstyle.color=never", "-s", str(work / "settings.xml"), "-f", str(work / "pom.xml"),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={tmp}",
        ]  # fmt: skip
        if maven_repo is not None:
            cmd.append(f"-Dmaven.repo.local={maven_repo}")
        t0 = time.monotonic()
        mvn_log = work / "maven.log"
        with open(mvn_log, "wb") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
        took = time.monotonic() - t0
        if rc != 0 or not (tmp / main_jar.name).is_file():
            raise CassandraNodeError(
                f"Maven could not fetch cassandra-all {version} (exit {rc}); see {mvn_log}:\n{_tail(mvn_log, 15)}"
            )
        shutil.rmtree(lib, ignore_errors=True)
        tmp.rename(lib)
        return lib, took
