"""Run every benchmark: `uv run python -m benchmarks` (or `make bench`)."""

import tempfile

from benchmarks import (app_load, cli_start, demo_time, gather_overhead, migrate_speed_memory, parse_linear, prompt_parse, toyworld_drift,
                        toyworld_learning, train_step_split)

if __name__ == "__main__":
    cli_start.main([])
    app_load.main([])
    prompt_parse.main()
    parse_linear.main()
    gather_overhead.main([])
    migrate_speed_memory.main([])
    train_step_split.main([])
    toyworld_drift.main([])
    with tempfile.TemporaryDirectory() as tmp:
        toyworld_learning.main(["--out", tmp])
    demo_time.main()
