"""``python -m keyart.app.cassandra_node start|stop|status|env``."""

import sys

from keyart.app.cassandra_node.cli import main

sys.exit(main())
