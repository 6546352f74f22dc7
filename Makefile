# edgegw: the two commands of the README, each doing all of its own set-up.
#   make demo   local mosquitto + agent + simulated fleet for ~30 s
#   make test   the whole test suite (what CI runs)
# Works as root or as a user with sudo on Debian / Raspberry Pi OS (Bookworm).

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_SECONDS ?= 30

.PHONY: demo test setup system-deps clean

demo: setup
	$(VENV)/bin/edgegw demo --duration-s $(DEMO_SECONDS)

test: setup
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q

# Debian packages: mosquitto (the tests' and the demo's real broker) and python3-venv.
system-deps:
	@if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then \
	    echo "installing mosquitto (Debian package)"; \
	    $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients; \
	fi
	@if ! $(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1; then \
	    echo "installing python3-venv (Debian package)"; \
	    $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	fi

# The virtualenv with edgegw (editable) and the test tools; re-installed when setup.cfg changes.
$(VENV)/.installed: setup.cfg pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

setup: system-deps $(VENV)/.installed

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .hypothesis
