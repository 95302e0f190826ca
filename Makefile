# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP  := $(VENV)/.installed

.PHONY: install browser run test lint typecheck pytest lock bench clean

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

test: install browser lint typecheck pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# Two test processes (pytest-xdist) on the two cores of the reference machine; a module and its
# module- or package-scoped servers stay in one process (--dist loadfile).
PYTEST_WORKERS ?= 2
pytest: install browser
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

# The browser tests drive Debian's chromium (a test tool's own browser download cannot work
# offline). Installed here when missing and the package manager is usable (root, or sudo
# without a password); otherwise `make test` stops at once with the command that fixes it.
CHROMIUM ?= /usr/bin/chromium
APT_GET  ?= apt-get
browser:
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if command -v $(APT_GET) >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then SUDO=; \
	elif command -v $(APT_GET) >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=sudo; \
	else \
	  echo "The browser tests need Debian's chromium at $(CHROMIUM), and it cannot be" \
	       "installed from here. Install it, then run make test again:" >&2; \
	  echo "    sudo apt-get install -y chromium" >&2; \
	  exit 1; \
	fi; \
	echo "Installing Debian's chromium for the browser tests ($(APT_GET) install chromium)"; \
	$$SUDO $(APT_GET) update -qq && \
	DEBIAN_FRONTEND=noninteractive $$SUDO $(APT_GET) install -y -qq chromium >/dev/null && \
	test -x "$(CHROMIUM)"

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
