# The one entry point: `make demo` runs the whole stack, `make test` runs every test.
#
#   make deps        toolchain targets, .venv (tests/requirements.txt), wasm-bindgen test runner
#   make build       the wasm filter and the policy service (release)
#   make test        deps + build, then fmt, clippy, native tests, the service's tests on PostgreSQL,
#                    wasm tests, envoy validate, pytest
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
        fmt-check clippy test-native test-wasm validate-envoy pytest demo bench clean-state \
        postgres-deps test-postgres

deps: rust-targets debian-deps python-deps wasm-bindgen-runner

rust-targets:
	@installed=$$(rustup target list --installed); \
	for t in wasm32-wasip1 wasm32-unknown-unknown; do \
	  grep -qx "$$t" <<<"$$installed" || rustup target add "$$t"; \
	done

# Debian packages the tests need: node (wasm-bindgen-test-runner runs the wasm tests in it)
# and redis-server (SESSION_TYPE=redis, started per run by tests/with_redis.sh).
debian-deps:
	@missing=""; command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
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
	$(MAKE) --no-print-directory fmt-check clippy test-native test-postgres test-wasm validate-envoy pytest

fmt-check:
	cargo fmt --all --check

# Natively for the logic and the service, and for wasm32-wasip1 for the Envoy glue.
clippy:
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p mlflow-edge-authz -p noop-filter --target $(WASM_TARGET) -- -D warnings

# Beside a throwaway Redis on a free loopback port (tests/with_redis.sh), stopped afterwards.
test-native:
	tests/with_redis.sh cargo test --workspace

# Debian's PostgreSQL server, only when no server binaries are installed.
postgres-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

# The service's tests again, on PostgreSQL: a throwaway cluster in $(PG_RUN) (run as the
# `postgres` user when we are root), on 127.0.0.1 and a free port only, password auth,
# no fsync. The tests create a database of their own each on it (store::testing).
# The server is stopped and its data removed when the run ends, passed or not (the logs stay).
PG_RUN := $(ROOT)/.test-run/pg
test-postgres: postgres-deps
	@bin=$$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1); \
	as=(); \
	if [ "$$(id -u)" = 0 ]; then \
	  id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres; \
	  as=(runuser -u postgres --); \
	fi; \
	rm -rf $(PG_RUN); mkdir -p $(PG_RUN); \
	password=$$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n'); \
	(umask 077; echo "$$password" > $(PG_RUN)/pwfile); \
	[ $${#as[@]} -eq 0 ] || chown postgres $(PG_RUN) $(PG_RUN)/pwfile; \
	"$${as[@]}" "$$bin/initdb" -D $(PG_RUN)/data -U postgres --pwfile=$(PG_RUN)/pwfile \
	  --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync >$(PG_RUN)/initdb.log 2>&1 \
	  || { cat $(PG_RUN)/initdb.log >&2; exit 1; }; \
	rm -f $(PG_RUN)/pwfile; \
	port=$$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'); \
	trap '"$${as[@]}" "$$bin/pg_ctl" -D $(PG_RUN)/data -m fast stop >/dev/null 2>&1; rm -rf $(PG_RUN)/data' EXIT; \
	"$${as[@]}" "$$bin/pg_ctl" -D $(PG_RUN)/data -l $(PG_RUN)/server.log -w -t 30 \
	  -o "-h 127.0.0.1 -p $$port -k '' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
	  start >/dev/null || { cat $(PG_RUN)/server.log >&2; exit 1; }; \
	PGPASSWORD="$$password" "$$bin/createdb" -h 127.0.0.1 -p "$$port" -U postgres policy_service; \
	echo "PostgreSQL $$("$$bin/postgres" --version | awk '{print $$3}') on 127.0.0.1:$$port ($(PG_RUN))"; \
	POLICY_SERVICE_TEST_DATABASE_URL="postgresql://postgres:$$password@127.0.0.1:$$port/policy_service" \
	  cargo test -p policy-service

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
	tests/with_redis.sh $(VENV)/bin/pytest tests -q

demo: deps build
	$(PY) envoy/local_stack.py demo

# Figures, not a test: the filter's throughput against Envoy without it (bench/run.py).
bench: deps bench-deps build
	cargo build --release --target $(WASM_TARGET) -p noop-filter
	$(PY) bench/run.py $(BENCH_ARGS)

# Forget the demo's state (users, sessions, MLflow data) and old test runs.
clean-state:
	rm -rf .demo .test-run
