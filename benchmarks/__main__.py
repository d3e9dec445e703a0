"""Run every benchmark: `uv run python -m benchmarks` (or `make bench`)."""

from benchmarks import demo_time, prompt_parse

if __name__ == "__main__":
    prompt_parse.main()
    demo_time.main()
