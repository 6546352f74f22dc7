# edgegw: the two commands of the README, each doing all of its own set-up.
#   make demo   local mosquitto + agent + simulated fleet for ~30 s
#   make test   the whole test suite (what CI runs)
#   make bench  every published figure (docs/performance.md), ~10 min; not part of the tests
#   make install-runtime   a gateway's install (README "Install on a Raspberry Pi"): run time only
# Works as root or as a user with sudo on Debian / Raspberry Pi OS (Bookworm).

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_SECONDS ?= 30

.PHONY: demo test bench setup system-deps install-runtime clean

demo: setup
	$(VENV)/bin/edgegw demo --duration-s $(DEMO_SECONDS)

test: setup node_modules/.installed
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n 2 --dist loadfile

# Each bench prints its table and writes bench/results/*.json; the plots need the plots extra.
BENCHES = bench_e2e bench_scaling bench_mac bench_codec bench_rules bench_udp_ingest bench_outbox bench_uplink bench_buffer_choice bench_device_state bench_cli_start bench_adr bench_txplan
bench: setup
	$(PY) -m pip install -q -e '.[plots]'
	@for b in $(BENCHES); do \
	    echo "== $$b"; \
	    if [ $$b = bench_scaling ]; then $(PY) bench/$$b.py --plot docs/img || exit 1; \
	    else $(PY) bench/$$b.py || exit 1; fi; \
	done

# Debian packages: mosquitto (the tests' and the demo's real broker), python3-venv, nodejs and npm.
system-deps:
	@if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then \
	    echo "installing mosquitto (Debian package)"; \
	    $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients; \
	fi
	@if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
	    echo "installing nodejs and npm (Debian packages; the LoRaWAN differential test runs npm lora-packet)"; \
	    $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; \
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

# Test-only Node packages (lora-packet, pinned in package-lock.json); re-installed when the lock changes.
node_modules/.installed: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	@touch $@

# A gateway's install: edgegw and the libraries it runs with, nothing else (no test tools, no
# Node, no mosquitto broker: the gateway publishes to the platform's). Not editable: a `git pull`
# changes nothing under a running agent until this is run again. RUNTIME_EXTRAS, comma-separated:
# js (vendor JavaScript codecs, e.g. milesight/vs121; the default), sx127x (a module on SPI).
RUNTIME_EXTRAS ?= js
install-runtime:
	@if ! $(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1; then \
	    echo "installing python3-venv (Debian package)"; \
	    $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	fi
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q '.$(if $(RUNTIME_EXTRAS),[$(RUNTIME_EXTRAS)])'
	@du -sh $(VENV)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .hypothesis node_modules
