# End-to-end benchmark targets (included by the Makefile).
BENCH_E2E_ARGS ?=

.PHONY: bench-e2e bench-e2e-analyzer bench-bounded bench-deps

bench-deps: ## apt-get install nginx, haproxy and wrk for the end-to-end bench (Debian packages)
	bash bench/install-deps.sh

bench-e2e: build bench-deps ## end-to-end bench: logdist memory/wal vs nginx and HAProxy, cheap sinks -> bench/results/latest.json
	$(PY) bench/e2e.py --sinks nginx $(BENCH_E2E_ARGS)

bench-e2e-analyzer: build bench-deps ## end-to-end bench with four real `logdist analyzer` sinks (the whole pipeline)
	$(PY) bench/e2e.py --sinks analyzer --out bench/results/latest-analyzer.json $(BENCH_E2E_ARGS)

bench-bounded: build bench-deps ## check logdist's RSS stays bounded (429s, not growth) when every sink is down
	$(PY) bench/e2e.py --mode bounded $(BENCH_E2E_ARGS)

# One analyzer, one wrk thread: the analyzer gets a core of its own on a 2-core machine.
BENCH_ANALYZER_ARGS ?= --wrk-threads 1 --connections 8 --runs 3 --duration 8

.PHONY: bench-analyzer
bench-analyzer: build bench-deps ## one `logdist analyzer` (Rust core, then pure Python) under wrk: messages/s and messages/s per CPU core
	$(PY) bench/e2e.py --mode analyzer $(BENCH_ANALYZER_ARGS)
	$(PY) bench/e2e.py --mode analyzer --pure $(BENCH_ANALYZER_ARGS)

# Before vs after in one run: logdist-memory/-wal from this tree and from BENCH_BASE (a checkout
# with its own `make build`), each right after the other.
BENCH_BASE ?=

.PHONY: bench-compare
bench-compare: build bench-deps ## logdist memory/wal from this tree vs BENCH_BASE=DIR (another checkout), side by side
	@test -n "$(BENCH_BASE)" || { echo "usage: make bench-compare BENCH_BASE=/path/to/other/checkout"; exit 2; }
	$(PY) bench/e2e.py --sinks nginx --systems logdist-memory,logdist-wal --baseline-tree $(BENCH_BASE) \
		--out bench/results/compare.json $(BENCH_E2E_ARGS)
