# auth-jit: `make run` starts the service, `make test` installs what the
# tests need and runs every test. See README.md.

SHELL := /bin/bash
CARGO ?= cargo
VENV  := .venv-test
PY    := $(VENV)/bin/python
# Third-party verifiers used by the interop tests, pinned.
PY_DEPS := pyjwt[crypto]==2.15.1 cryptography==50.0.2 authlib==1.9.6 joserfc==1.8.0 requests==2.34.2 \
           grpcio==1.85.3 opentelemetry-proto==1.45.2 protobuf==7.36.2 \
           pyyaml==6.0.3 prometheus-client==0.26.0 schemathesis==4.32.5

.PHONY: all install run test test-deps lint fmt clean bench abuse fuzz

all: install

## install: build the release binary (target/release/auth-jit)
install:
	$(CARGO) build --release --locked

## run: build and start the service on AUTH_JIT_HOST:AUTH_JIT_PORT (127.0.0.1:8000)
run:
	$(CARGO) run --release --locked -- serve

## test-deps: what the tests need beyond cargo: redis-server, openssl, chromium (apt), playwright-core and jose (npm), a Python venv with pinned interop tools
test-deps:
	@# Debian packages, installed only when missing (one apt-get update).
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing with apt-get:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# The browser driver (playwright-core, pinned by the lock file; it uses
	@# Debian's Chromium and downloads no browser).
	@if [ ! -d tests/browser/node_modules/playwright-core ]; then \
		npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error; \
	fi
	@# The Node verifier of the interop tests (jose, pinned by the lock file).
	@if [ ! -d tests/interop/node/node_modules/jose ]; then \
		npm ci --prefix tests/interop/node --no-audit --no-fund --loglevel=error; \
	fi
	@# Reinstalled whenever the pins change (the stamp holds the pin list).
	@if [ ! -x $(PY) ] || [ "$$(cat $(VENV)/pins 2>/dev/null)" != "$(PY_DEPS)" ]; then \
		echo "creating $(VENV) with $(PY_DEPS)"; \
		python3 -m venv $(VENV) && $(PY) -m pip install -q --disable-pip-version-check $(PY_DEPS) \
			&& echo "$(PY_DEPS)" > $(VENV)/pins; \
	fi

## test: install test dependencies, then run every test (unit, integration, interop)
test: test-deps lint
	set -o pipefail; { AUTH_JIT_TEST_PYTHON=$(abspath $(PY)) $(CARGO) test --locked --workspace --all-targets \
		&& $(CARGO) test --locked -p auth-jit-verifier --doc; } 2>&1 | tee target/test-output.txt
	@# One closing line for the whole run (cargo prints one per test binary).
	@awk '/^test result:/ {p += $$4; f += $$6} END {printf "%d passed, %d failed\n", p, f}' target/test-output.txt

## bench: auth-jit against a bare axum ceiling in one interleaved run (wrk; table to bench/results.md)
bench:
	$(CARGO) build --release --locked --bin auth-jit --example reference --example mint
	@command -v wrk >/dev/null 2>&1 || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get install -y -qq wrk >/dev/null; }
	python3 bench/bench.py $(BENCH_ARGS)

## abuse: slow heads, idle flood, secret guessing and 2x overload against the release build (takes the machine for a minute)
abuse: install
	@command -v wrk >/dev/null 2>&1 || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get install -y -qq wrk >/dev/null; }
	bench/abuse.sh

FUZZ_SECS ?= 20
## fuzz: each fuzz target for FUZZ_SECS seconds (nightly toolchain; installs cargo-fuzz from crates.io if missing)
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in verify_token client_assertion oauth_form; do \
		$(CARGO) +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECS) || exit 1; \
	done

## lint: rustfmt check, clippy with warnings as errors (the whole workspace), and the verifier crate's docs
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked -p auth-jit-verifier --no-deps

## fmt: format the code
fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf $(VENV) tests/browser/node_modules tests/interop/node/node_modules
