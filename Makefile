# logdist: the one entry point. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-stamp
export PYO3_PYTHON := $(abspath $(PY))
PYTEST_ARGS ?=
# pytest-xdist workers: the suite mostly waits on real processes, so more workers than cores pay.
PYTEST_WORKERS ?= 4
PYTEST_MARK ?= not benchmark and not docker
PYTEST := $(PY) -m pytest -n $(PYTEST_WORKERS) -m "$(PYTEST_MARK)"

# The extension is rebuilt only when what goes into it changes: the stamp holds the kind of the
# build installed (release or dev) and a hash of these files (names and contents).
EXT_STAMP := $(VENV)/.wlb-stamp
EXT_INPUTS = $(shell find crates -path crates/wlb-fuzz -prune -o \( -name '*.rs' -o -name Cargo.toml \) -print | LC_ALL=C sort) \
	Cargo.toml Cargo.lock pyproject.toml
EXT_HASH = $(shell sha256sum $(EXT_INPUTS) | sha256sum | cut -c1-16)
# The dev build: the release profile without LTO, 16 codegen units and incremental, in its own
# target dir so that it and the release build do not evict each other. Optimised, because the
# load tests (kill -9 under load) would crawl on an unoptimised core; Cargo.toml stays as is.
DEV_CARGO_ENV := CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
	CARGO_PROFILE_RELEASE_INCREMENTAL=true
DEV_TARGET_DIR := target/dev-ext

.PHONY: help run up test test-fast test-rs test-py test-rust lint lint-py lint-rs format hooks bench bench-micro wheel \
	build build-dev clean fuzz fuzz-ci

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-22s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

$(DEPS): requirements-dev.txt | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# $(call ext_build,KIND,ACCEPTED-KINDS,MATURIN-ARGS): build unless the stamp says that one of
# ACCEPTED-KINDS was built from the same inputs and the .so is still there.
define ext_build
	@set -euo pipefail; want="$(EXT_HASH)"; have="$$(cat $(EXT_STAMP) 2>/dev/null || true)"; \
	if [[ -n "$$have" && " $(2) " == *" $${have%% *} "* && "$${have#* }" == "$$want" ]] \
		&& compgen -G 'python/logdist/_wlb*.so' >/dev/null; then \
		echo "==> logdist._wlb is up to date ($$have)"; \
	else \
		echo "==> building logdist._wlb ($(1))"; \
		rm -f $(EXT_STAMP); \
		VIRTUAL_ENV=$(abspath $(VENV)) $(3); \
		echo "$(1) $$want" > $(EXT_STAMP); \
	fi
endef

build: $(DEPS) ## create .venv, install dependencies, build the Rust extension (release, LTO) unless unchanged
	$(call ext_build,release,release,$(VENV)/bin/maturin develop --release --quiet)

build-dev: $(DEPS) ## the same with a fast build (no LTO, incremental) for tests; a release build of the same tree counts
	$(call ext_build,dev,dev release,$(DEV_CARGO_ENV) $(VENV)/bin/maturin develop --release --quiet --target-dir $(DEV_TARGET_DIR))

run: build ## start a whole local pipeline (logdist up) with a live view of the shares
	$(VENV)/bin/logdist up

up: run

test-rust: ## cargo test of the pure-Rust core (includes the multi-threaded stress tests)
	cargo test --quiet -p wlb

test-rs: build-dev ## pytest on the Rust backend (parallel: PYTEST_WORKERS=4)
	$(PYTEST) $(PYTEST_ARGS)

test-py: build-dev ## pytest on the pure-Python backend (LOGDIST_PURE=1, parallel)
	LOGDIST_PURE=1 $(PYTEST) $(PYTEST_ARGS)

test-fast: test-rs ## quick iteration: dev build, pytest on the Rust backend only, in parallel

test: build-dev ## dev build, then cargo test + loom + pytest on both backends (what CI runs)
	@echo "==> cargo test (wlb core)"
	cargo test --quiet -p wlb
	@echo "==> loom model check of the ring buffer"
	RUSTFLAGS="--cfg loom" cargo test --quiet -p wlb --release --test loom_ring --target-dir target/loom
	@echo "==> pytest, Rust backend"
	$(PYTEST) $(PYTEST_ARGS)
	@echo "==> pytest, pure-Python backend (LOGDIST_PURE=1)"
	LOGDIST_PURE=1 $(PYTEST) $(PYTEST_ARGS)

# Fuzzing: libFuzzer on stable Rust (crates/wlb-fuzz/fuzz.sh), FUZZ_SECONDS per target, then the
# property tests (tests/fuzz, tests/distributor/test_property_path.py) with more examples.
FUZZ_SECONDS ?= 60
FUZZ_PROPERTY_TESTS := tests/fuzz tests/distributor/test_property_path.py

fuzz: build-dev ## fuzz the packet scanner, OTLP decoder and WAL reader (FUZZ_SECONDS=60 each), then the property tests, both backends
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash crates/wlb-fuzz/fuzz.sh
	@echo "==> property tests, hypothesis profile 'fuzz', Rust backend"
	LOGDIST_FUZZ_PROFILE=fuzz $(PY) -m pytest -q -n 2 --timeout 1200 $(FUZZ_PROPERTY_TESTS)
	@echo "==> property tests, hypothesis profile 'fuzz', pure-Python backend"
	LOGDIST_PURE=1 LOGDIST_FUZZ_PROFILE=fuzz $(PY) -m pytest -q -n 2 --timeout 1200 $(FUZZ_PROPERTY_TESTS)

fuzz-ci: ## the short fuzz pass CI runs: each libFuzzer target for 20 s (the property tests run in `make test`)
	FUZZ_SECONDS=$${FUZZ_SECONDS:-20} bash crates/wlb-fuzz/fuzz.sh

# The Python sources ruff formats and checks (lint and format use the same list).
PY_SOURCES := python tests bench

lint: lint-py lint-rs ## all the static checks CI runs (lint-py + lint-rs)

lint-py: build-dev ## ruff check (incl. C90 complexity 15), ruff format --check, mypy --strict, stubtest of logdist._wlb
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest logdist._wlb

lint-rs: $(DEPS) ## cargo clippy -D warnings, cargo fmt --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	cargo fmt --all --check

# Fixes first (a fix can leave code to reformat); what cannot be fixed is printed, lint fails on it.
format: $(DEPS) ## rewrite the sources the way lint wants them: ruff check --fix, ruff format, cargo fmt
	$(VENV)/bin/ruff check --fix --exit-zero $(PY_SOURCES)
	$(VENV)/bin/ruff format $(PY_SOURCES)
	cargo fmt --all

hooks: $(DEPS) ## install the git hooks of .pre-commit-config.yaml (lint on commit, test-fast on push)
	$(VENV)/bin/pre-commit install

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
