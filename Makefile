# wasmcell — run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
# Every cargo invocation sees the same value, so demo-app's build script never reruns just
# because one target set it and another did not.
export WASMCELL_OCI_OUT := $(CURDIR)/target/oci
# containerd release lines the integration tests run against (see test/fetch-debian.sh).
CONTAINERD_VERSIONS ?= 2.1 1.7 1.6
# containerd release line(s) make bench runs under (1.6 matches DESIGN.md's baselines).
BENCH_CONTAINERD ?= 2.1 1.6

PREFIX ?= /usr/local
# The shim's front (crates/shim-front) ships static: containerd execs it for every `delete`.
FRONT_TARGET := $(shell uname -m)-unknown-linux-musl

.PHONY: help setup build demo-images demo install test soak lint fmt clean containerd bench

help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## Install everything build, demo, test and bench need (scripts/setup.sh all).
	scripts/setup.sh all

build: demo-images ## Build the wasmcell command and the demo images (debug).
	$(CARGO) build --workspace --locked

demo-images: ## Build demo-app and its guests (demo-http, demo-p3, demo-p3-http); their nine OCI tars go to target/oci/.
	@scripts/setup.sh build
	$(CARGO) build -p demo-app --locked
	@ls -l target/oci/*.tar

demo: ## The quickstart: build, start a private containerd, run the demo images, clean up.
	demo/run.sh

install: ## Install the shim (containerd-shim-wasmcell-v1 and its -core) and wasmcell into $(PREFIX)/bin (release build).
	@scripts/setup.sh build
	$(CARGO) build --release --locked -p wasmcell-shim -p wasmcell
	$(CARGO) build --release --locked -p wasmcell-shim-front --target $(FRONT_TARGET)
	install -D -m 0755 target/$(FRONT_TARGET)/release/containerd-shim-wasmcell-v1 $(DESTDIR)$(PREFIX)/bin/containerd-shim-wasmcell-v1
	install -D -m 0755 target/release/containerd-shim-wasmcell-v1-core $(DESTDIR)$(PREFIX)/bin/containerd-shim-wasmcell-v1-core
	install -D -m 0755 target/release/wasmcell $(DESTDIR)$(PREFIX)/bin/wasmcell

containerd: ## Fetch private containerd binaries (2.1, 1.7, 1.6) into the user cache; no system change.
	@CONTAINERD_VERSIONS="$(CONTAINERD_VERSIONS)" scripts/setup.sh test

test: ## Unit and integration tests (installs what they need; they start their own containerd).
	@scripts/setup.sh test
	$(MAKE) --no-print-directory demo-images
	$(CARGO) build --workspace --bins --locked   # the integration tests run the real binaries
	$(CARGO) test --workspace --locked

soak: ## Churn 2,000 containers and 200 pods with faults injected; target/soak/report.{md,json} (root).
	@scripts/setup.sh test
	$(MAKE) --no-print-directory demo-images
	$(CARGO) build --workspace --bins --locked
	$(CARGO) test -p wasmcell-tests --test integration --locked -- churn::soak --exact --ignored --nocapture

lint: ## rustfmt check and clippy with warnings as errors.
	@scripts/setup.sh build
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path demo-app/guests/Cargo.toml --all -- --check   # its own workspace (wasm32 only)
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code.
	$(CARGO) fmt --all
	$(CARGO) fmt --manifest-path demo-app/guests/Cargo.toml --all

bench: ## Release build, then ctr run latency and PSS per container, wasmcell vs runc (root; target/bench/).
	@BENCH_CONTAINERD="$(BENCH_CONTAINERD)" scripts/setup.sh bench
	BENCH_CONTAINERD="$(BENCH_CONTAINERD)" CARGO="$(CARGO)" bench/run.sh

clean: ## Remove build outputs (target/, including target/oci).
	$(CARGO) clean
