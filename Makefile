# kuasar-py — the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SANDBOX_ROOT ?= /tmp/kuasar-demo
DEMO_ID ?= demo-pod-1

.PHONY: all setup demo test test-unit test-functional test-interop test-vm lint proto fuzz bench bench-vm clean

all: test

$(STAMP): pyproject.toml
	@if [ "$$(uname -s)" = Linux ] && command -v dpkg-query >/dev/null; then ./scripts/setup-debian.sh; fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,fast]'
	@touch $@

setup: $(STAMP)

# Start a local sandbox (no VM needed), run a command and open an interactive shell in it (when stdin
# is a terminal); scripts/demo.sh stops the sandbox on every exit, a failing step or Ctrl-C included.
demo: $(STAMP)
	@BIN=$(BIN) SANDBOX_ROOT=$(SANDBOX_ROOT) DEMO_ID=$(DEMO_ID) ./scripts/demo.sh

# Every tier that runs here: unit, functional and interop, then the vm tier (QEMU/TCG guests, ~3 min;
# each tier skips with its reason when what it needs is missing).
test: $(STAMP) lint
	$(PY) -m pytest -q tests/unit tests/functional tests/interop
	$(PY) -m pytest -q -m vm tests/vm

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

test-functional: $(STAMP)
	$(PY) -m pytest -q tests/functional

test-interop: $(STAMP)
	$(PY) -m pytest -q tests/interop

# Real Linux guests under QEMU (TCG) behind our vhost-user-vsock device (kuasar.vmm): the device with
# socat services, and `sandbox run --vmm qemu` with kuasar-agent as PID 1. Needs qemu-system-x86,
# busybox-static, socat, runc and tmux (scripts/setup-debian.sh); the kernel packages are fetched with
# apt-get download once and cached in ~/.cache/kuasar-py. Prints its measured numbers (-s). Do not
# run it beside other heavy work on a 2-core machine.
test-vm: $(STAMP)
	$(PY) -m pytest -q -s -m vm tests/vm

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

proto: $(STAMP)
	$(PY) scripts/gen_proto.py

fuzz: $(STAMP)
	$(PY) -m pip install -q -e '.[fuzz]' || echo "atheris unavailable: using the random engine"
	$(PY) tests/fuzz/fuzz_ttrpc.py --runs $${RUNS:-100000}

# Every benchmark (bench/run_all.py; each script also runs alone): one table of issue 12's measures
# against their goals, raw numbers in bench/results.json. About 1.5 minutes; starts 100 local sandboxes.
bench: $(STAMP)
	$(PY) bench/run_all.py

# A QEMU/TCG guest (sandbox run --vmm qemu) against a local sandbox: boot, exec, throughput, vsock MB/s.
bench-vm: $(STAMP)
	$(PY) bench/vm_boot.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
