# tongban — developer entry points. See README.md.
#
#   make run    create .venv if needed, install, run the demo
#   make test   create .venv if needed, install, ensure chromium and docker-compose,
#               run pytest
#
# The venv is (re)installed only when pyproject.toml is newer than the stamp
# file, so re-running a target is cheap.

SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all run test lint clean distclean venv chromium docker-compose

all: test

run: $(STAMP)
	$(BIN)/tongban demo

test: $(STAMP) chromium docker-compose
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

venv: $(STAMP)

# Create the virtual environment once and upgrade pip inside it once.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "error: $(PYTHON) must be Python >= 3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo "error: '$(PYTHON) -m venv' failed (on Debian: apt-get install python3-venv)" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip

# Install the project (editable) with its test extra; redone only when
# pyproject.toml changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

# The browser tests need Debian's chromium, and a Chinese font for the pages it shows
# (screenshots would show empty boxes). Install them with apt-get if missing.
chromium:
	@if command -v chromium >/dev/null 2>&1 && dpkg-query -W -f='$${Status}' fonts-wqy-microhei \
	   2>/dev/null | grep -q 'ok installed'; then exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=; \
	elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	else echo "error: chromium or its Chinese font is missing and installing them needs root or sudo" >&2; exit 1; fi; \
	echo "chromium or a Chinese font is missing: installing Debian packages 'chromium fonts-wqy-microhei' with apt-get"; \
	if ! $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update \
	   || ! $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-wqy-microhei; then \
		echo "error: apt-get could not install chromium; install them by hand (apt-get install chromium fonts-wqy-microhei) and re-run 'make test'" >&2; \
		exit 1; \
	fi; \
	command -v chromium >/dev/null 2>&1 || { echo "error: chromium still not on PATH after apt-get install" >&2; exit 1; }

# tests/test_docker.py validates docker/compose.yaml with 'docker-compose config'
# (Debian's docker-compose; no Docker engine is needed). Install it if missing.
docker-compose:
	@if command -v docker-compose >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=; \
	elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	else echo "error: docker-compose is missing and installing it needs root or sudo" >&2; exit 1; fi; \
	echo "docker-compose not found: installing Debian package 'docker-compose' with apt-get"; \
	if ! $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update \
	   || ! $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-compose; then \
		echo "error: apt-get could not install docker-compose; install it by hand (apt-get install docker-compose) and re-run 'make test'" >&2; \
		exit 1; \
	fi; \
	command -v docker-compose >/dev/null 2>&1 || { echo "error: docker-compose still not on PATH after apt-get install" >&2; exit 1; }

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis test-artifacts
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

# clean, and also remove the virtual environment.
distclean: clean
	rm -rf $(VENV)
