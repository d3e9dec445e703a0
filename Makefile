# Two commands on a fresh machine: `make demo` and `make test`. Both install uv with pip when it is
# missing and run inside the locked environment (uv.lock); nothing is installed by hand.
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif
PYTEST_ARGS ?=
# Two pytest-xdist workers, whole files each (a file's module fixtures, such as an app server, are built once);
# `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

.PHONY: demo test test-fast bench env browser

env:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --locked --quiet

demo: env
	$(UV) run sd-bridge demo

# The app's browser test drives Debian's Chromium (no browser download); install it when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Everything, slow tests too, with the 25 slowest listed at the end (CI runs this).
test: env browser
	$(UV) run pytest $(XDIST) --durations=25 $(PYTEST_ARGS)

# The inner loop: every test not marked slow.
test-fast: env browser
	$(UV) run pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

# Every benchmark; each writes benchmarks/results/NAME.json, then docs/results.md is regenerated from them.
bench: env
	$(UV) run python -m benchmarks
	$(UV) run python -m benchmarks.results
