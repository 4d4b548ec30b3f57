"""A real single-node Apache Cassandra on loopback, for development and tests.

The server comes from Maven Central (``org.apache.cassandra:cassandra-all``): Maven copies the
jar and its runtime dependencies into ``.cache/cassandra/<version>/lib`` of the checkout once;
later starts reuse that cache and run no Maven at all. The node's files live in a *home*
(default ``var/cassandra``): ``conf/`` (generated cassandra.yaml and logback.xml), ``data/``,
``commitlog/``, ``logs/system.log``, ``node.json`` (the chosen ports and options, so a restart
keeps the ports and the data) and ``cassandra.pid`` while it runs.

    python -m keyart.app.cassandra_node start [--auth] [--tls]   # prints the KEYART_* to export
    python -m keyart.app.cassandra_node status | env | stop

From Python (e.g. a pytest session fixture)::

    node = start_node(tmp_home, auth=True)
    os.environ.update(node.env())
    ...
    stop_node(tmp_home)

Standard library only; ``cassandra-driver`` is imported lazily for the readiness probe (without
it, readiness falls back to the log line plus a TCP connect). Needs Java 17 (``java`` on PATH or
``JAVA_HOME``) and, for the first fetch only, Maven (``mvn``).

Modules: ``common`` (constants, errors, NodeInfo, the home's layout), ``jars`` (Java/Maven and the
jar cache), ``config`` (ports, cassandra.yaml, logback.xml, TLS material, JVM command), ``process``
(start/stop/status and readiness), ``cli`` (``python -m keyart.app.cassandra_node``).
"""

from __future__ import annotations

from keyart.app.cassandra_node.cli import main
from keyart.app.cassandra_node.common import (
    CASSANDRA_VERSION,
    CassandraNodeError,
    MissingToolError,
    NodeInfo,
    NodeStartError,
    default_cache_dir,
    default_home,
)
from keyart.app.cassandra_node.jars import fetch_jars, find_java
from keyart.app.cassandra_node.process import node_config, node_status, start_node, stop_node

__all__ = [
    "CASSANDRA_VERSION",
    "CassandraNodeError",
    "MissingToolError",
    "NodeInfo",
    "NodeStartError",
    "default_cache_dir",
    "default_home",
    "fetch_jars",
    "find_java",
    "main",
    "node_config",
    "node_status",
    "start_node",
    "stop_node",
]
