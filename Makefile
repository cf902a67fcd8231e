# The one entry point: `make demo` runs the whole stack, `make test` runs every test.
#
#   make deps        toolchain targets, .venv (tests/requirements.txt), wasm-bindgen test runner
#   make build       the wasm filter and the policy service (release)
#   make test        deps + build, then fmt, clippy, native tests, wasm tests, envoy validate, pytest
#   make demo        deps + build, then the stack on http://127.0.0.1:$${DEMO_PORT:-8080}/
#   make bench       the filter's throughput against Envoy without it (BENCH_ARGS=--rounds 5)
#   make bench-deps  wrk and binaryen (wasm-opt), for the benchmark

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test
# Steps run in the order written, even under make -j.
.NOTPARALLEL:

ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
TOOLS := $(ROOT)/.tools
WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release/mlflow_edge_authz.wasm
SERVICE := target/release/policy-service
# The wasm-bindgen the test runner must match: the one Cargo.lock resolved.
WASM_BINDGEN_VERSION = $(shell awk '/^name = "wasm-bindgen"$$/ {getline; gsub(/"/, "", $$3); print $$3; exit}' Cargo.lock)

.PHONY: deps rust-targets python-deps wasm-bindgen-runner debian-deps bench-deps build test \
        fmt-check clippy test-native test-wasm validate-envoy pytest demo bench clean-state

deps: rust-targets debian-deps python-deps wasm-bindgen-runner

rust-targets:
	@installed=$$(rustup target list --installed); \
	for t in wasm32-wasip1 wasm32-unknown-unknown; do \
	  grep -qx "$$t" <<<"$$installed" || rustup target add "$$t"; \
	done

# Debian packages the tests need: only node (wasm-bindgen-test-runner runs the wasm tests in it).
debian-deps:
	@missing=""; command -v node >/dev/null || missing="$$missing nodejs"; \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $$missing; fi

python-deps: $(VENV)/.requirements.stamp

# Reinstalled only when tests/requirements.txt changes.
$(VENV)/.requirements.stamp: tests/requirements.txt
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	@echo "pip install -r tests/requirements.txt into .venv"
	@$(PY) -m pip install -q --disable-pip-version-check -r tests/requirements.txt
	@touch $@

wasm-bindgen-runner:
	@want="$(WASM_BINDGEN_VERSION)"; \
	if [ -z "$$want" ]; then echo "no wasm-bindgen in Cargo.lock" >&2; exit 1; fi; \
	have=$$($(TOOLS)/bin/wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $$2}' || true); \
	if [ "$$have" != "$$want" ]; then \
	  echo "cargo install wasm-bindgen-cli $$want into .tools (about 2 min)"; \
	  cargo install -q wasm-bindgen-cli --version "=$$want" --root $(TOOLS); \
	fi

bench-deps:
	@missing=""; command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v wasm-opt >/dev/null || missing="$$missing binaryen"; \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $$missing; fi

build:
	cargo build --release --target $(WASM_TARGET) -p mlflow-edge-authz
	cargo build --release -p policy-service

test: deps build
	$(MAKE) --no-print-directory fmt-check clippy test-native test-wasm validate-envoy pytest

fmt-check:
	cargo fmt --all --check

# Natively for the logic and the service, and for wasm32-wasip1 for the Envoy glue.
clippy:
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p mlflow-edge-authz -p noop-filter --target $(WASM_TARGET) -- -D warnings

test-native:
	cargo test --workspace

# The filter's pure logic compiled to wasm, run in node by wasm-bindgen-test-runner.
test-wasm:
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(TOOLS)/bin/wasm-bindgen-test-runner \
	  cargo test -p mlflow-edge-authz --lib --target wasm32-unknown-unknown

# Every Envoy template, rendered with render.py's defaults (the built filter included),
# must pass `envoy --mode validate`: that also compiles the wasm and runs its on_configure.
validate-envoy:
	@test -f $(WASM) || { echo "$(WASM) is missing: make build" >&2; exit 1; }
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	for t in envoy/*.yaml; do \
	  name=$$(basename "$$t"); \
	  $(PY) -c 'import sys; sys.path.insert(0, "envoy"); import render; sys.stdout.write(render.render({}, template=sys.argv[1]))' \
	    "$$name" > "$$tmp/$$name"; \
	  echo "envoy --mode validate $$t"; \
	  $(VENV)/bin/envoy --mode validate -c "$$tmp/$$name" -l warning --disable-hot-restart \
	    || { echo "$$t: envoy rejected the rendered config" >&2; exit 1; }; \
	done

pytest:
	$(VENV)/bin/pytest tests -q

demo: deps build
	$(PY) envoy/local_stack.py demo

# Figures, not a test: the filter's throughput against Envoy without it (bench/run.py).
bench: deps bench-deps build
	cargo build --release --target $(WASM_TARGET) -p noop-filter
	$(PY) bench/run.py $(BENCH_ARGS)

# Forget the demo's state (users, sessions, MLflow data) and old test runs.
clean-state:
	rm -rf .demo .test-run
