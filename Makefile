# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP  := $(VENV)/.installed

.PHONY: install run test lint typecheck pytest lock bench clean

install: $(STAMP)

# Installs exactly what requirements.lock lists (uv is pinned and only used as a fast installer).
$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

run: install
	$(BIN)/portal up

test: install lint typecheck pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

bench: install
	$(BIN)/python -m benchmarks.catalog

# Re-resolve the lock after editing pyproject.toml dependencies.
lock:
	@test -x $(BIN)/uv || $(MAKE) install
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 \
		--universal --index-url https://pypi.org/simple \
		-o requirements.lock

clean:
	rm -rf $(VENV) .portal .pytest_cache .mypy_cache .ruff_cache
