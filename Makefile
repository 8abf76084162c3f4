# The two commands of the README: `make demo` and `make test`. Both install uv if missing and sync the lock.
PYTHON ?= python3
UV := $(PYTHON) -m uv
HOME_DIR ?= clientbase-home

.PHONY: setup demo test lint docs bench

setup:
	@./scripts/ensure-uv.sh
	$(UV) sync --frozen

demo: setup
	$(UV) run --frozen clientbase demo --home $(HOME_DIR)

test: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen pytest

lint: setup
	$(UV) run --frozen ruff check .

docs: setup
	$(UV) run --frozen clientbase docs
