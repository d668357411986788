# logdist: the one entry point. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-stamp
export PYO3_PYTHON := $(abspath $(PY))
PYTEST_ARGS ?=

.PHONY: help run up test test-rs test-py test-rust lint bench bench-micro wheel build clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-22s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

$(DEPS): requirements-dev.txt | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

build: $(DEPS) ## create .venv, install dependencies, build the Rust extension (release) into it
	@echo "==> building logdist._wlb (release)"
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --quiet

run: build ## start a whole local pipeline (logdist up) with a live view of the shares
	$(VENV)/bin/logdist up

up: run

test-rust: ## cargo test of the pure-Rust core (includes the multi-threaded stress tests)
	cargo test --quiet -p wlb

test-rs: build ## pytest on the Rust backend
	$(PY) -m pytest -m "not benchmark and not docker" $(PYTEST_ARGS)

test-py: build ## pytest on the pure-Python backend (LOGDIST_PURE=1)
	LOGDIST_PURE=1 $(PY) -m pytest -m "not benchmark and not docker" $(PYTEST_ARGS)

test: build ## build, then cargo test + pytest on both backends
	@echo "==> cargo test (wlb core)"
	cargo test --quiet -p wlb
	@echo "==> loom model check of the ring buffer"
	RUSTFLAGS="--cfg loom" cargo test --quiet -p wlb --release --test loom_ring --target-dir target/loom
	@echo "==> pytest, Rust backend"
	$(PY) -m pytest -m "not benchmark and not docker" $(PYTEST_ARGS)
	@echo "==> pytest, pure-Python backend (LOGDIST_PURE=1)"
	LOGDIST_PURE=1 $(PY) -m pytest -m "not benchmark and not docker" $(PYTEST_ARGS)

lint: build ## ruff, mypy (+ stubtest of logdist._wlb), cargo clippy -D warnings, cargo fmt --check
	$(VENV)/bin/ruff check python tests bench
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest logdist._wlb --ignore-missing-stub
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	cargo fmt --all --check

bench: build bench-deps ## core microbenchmarks (both backends), then the end-to-end bench: logdist memory/wal vs nginx, HAProxy
	$(PY) bench/micro.py
	$(PY) bench/e2e.py --sinks nginx $(BENCH_E2E_ARGS)

bench-micro: build ## only the core microbenchmarks on both backends (pytest-benchmark), printed as a table
	$(PY) bench/micro.py

wheel: $(DEPS) ## build an installable wheel into dist/
	$(VENV)/bin/maturin build --release --out dist

-include docker/docker.mk
-include bench/bench.mk

clean: ## remove build outputs (keeps .venv)
	cargo clean
	rm -rf dist .pytest_cache
