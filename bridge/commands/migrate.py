"""`sd-bridge migrate IN --out OUT`: a whole prompt library translated (bridge.io.migrate does the work).

Exit status: 0 every row migrated, 3 finished with row errors (listed in OUT.errors.jsonl), 2 usage: an input
that cannot be migrated as a whole is one line, and nothing is written.
"""

from __future__ import annotations

import sys

from bridge.config import summary_log
from bridge.io.migrate import EXIT_USAGE, MigrateConfig, UsageError, migrate

__all__ = ["MigrateConfig", "run_migrate"]


def run_migrate(cfg: MigrateConfig, log=print) -> int:
    try:
        return migrate(cfg, summary_log(cfg, log))
    except UsageError as err:
        print(f"sd-bridge migrate: error: {err}", file=sys.stderr)
        return EXIT_USAGE
