# `make demo` and `make test` each set themselves up on a fresh machine (Debian 12, Python 3.11, root).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)
# Icarus (second RTL simulator); a C++ toolchain, make, lz4 and zlib for Verilator builds and FST waves
APT_PACKAGES := iverilog g++ make liblz4-dev zlib1g-dev
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup demo test test-all bench clean

$(STAMP): pyproject.toml
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "== apt-get install$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[torch,onnx,keras,plots,test]"
	@rm -f $(VENV)/.installed-*; touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gru-hw demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q

# Reruns every benchmark and rewrites docs/benchmarks.md (board builds included: about half an
# hour); one section: make bench BENCH_ARGS="--only accuracy" (see python bench/docs.py --help).
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) bench/docs.py $(BENCH_ARGS)

clean:
	rm -rf build demo-out .pytest_cache
