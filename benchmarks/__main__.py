"""Run every benchmark: `uv run python -m benchmarks` (or `make bench`)."""

from benchmarks import demo_time, gather_overhead, prompt_parse

if __name__ == "__main__":
    prompt_parse.main()
    gather_overhead.main([])
    demo_time.main()
