# The two commands of the README: `make demo` and `make test`. Both install uv if missing and sync the lock.
PYTHON ?= python3
UV := $(PYTHON) -m uv
HOME_DIR ?= clientbase-home

.PHONY: setup browser demo test lint docs bench

setup:
	@./scripts/ensure-uv.sh
	$(UV) sync --frozen

demo: setup
	$(UV) run --frozen clientbase demo --home $(HOME_DIR)

# The report test renders in Debian's chromium; without root or a package mirror it is skipped, not failed.
browser:
	@command -v chromium >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1) || \
	  echo "chromium not installed: the browser test of the report will be skipped"

# The suite runs on up to four processes (pytest-xdist), one test module per process at a time: a module's
# fixtures are built once, and each process that gets a flow test starts its own Prefect test server.
test: setup browser
	$(UV) run --frozen ruff check .
	$(UV) run --frozen pytest -n auto --maxprocesses 4 --dist loadfile

lint: setup
	$(UV) run --frozen ruff check .

docs: setup
	$(UV) run --frozen clientbase docs
