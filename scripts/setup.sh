#!/usr/bin/env bash
# The one place that says what this project needs from the machine. `.ci/run`, `make build`,
# `make demo`, `make test` and `make bench` all call it, so their lists cannot drift apart.
#
#   scripts/setup.sh PURPOSE...      PURPOSE: build demo test bench (or all)
#
# Idempotent: one dpkg query and one rustup query when nothing is missing (well under a
# second), apt-get only for what is absent. Prints one line per thing it installed, and
# nothing else unless it has work to do. Debian packages go to the system (apt-get, root
# needed only when something is missing); rustup targets to the active toolchain; containerd
# release lines are unpacked from Debian packages into ~/.cache/wasmcell (test/fetch-debian.sh),
# never installed or started.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "setup: $*" >&2; }
die() { log "$*"; exit 1; }

# Per purpose: Debian packages, with why each is there.
#   protobuf-compiler  containerd-client's and k8s-cri's protos are compiled at build time
#   gcc libc6-dev make the build itself (-sys crates, build scripts) and bench's static programs
pkgs_build=(protobuf-compiler gcc libc6-dev make)
#   curl python3       make demo's HTTP requests and its free-port pick
pkgs_demo=(curl python3)
#   skopeo             an independent OCI client (push, inspect) in the tests
#   docker-registry    a real OCI registry on 127.0.0.1 for CRI pulls and the registry verbs
#   apache2-utils      htpasswd, for a registry that asks for credentials
#   containernetworking-plugins  CNI for the tests' pod networks
#   iproute2           the tests' bridges and network namespaces
#   runc               the baseline the confinement tests compare a guest's /proc status with
pkgs_test=(skopeo docker-registry apache2-utils containernetworking-plugins iproute2 runc)
#   runc python3 python3-matplotlib  the baseline runtime, the report and its plot
#   wrk curl           the HTTP load generator and readiness checks
pkgs_bench=(runc python3 python3-matplotlib wrk curl)

# Rustup targets: demo-app's guest (wasip2), the preview 1 fixtures in the tests (wasip1), the
# shim's front as it ships (static musl, pure Rust: no musl-gcc needed).
targets_build=(wasm32-wasip1 wasm32-wasip2 "$(uname -m)-unknown-linux-musl")

# containerd release lines each purpose runs against (test/fetch-debian.sh's names).
containerd_demo=("${DEMO_CONTAINERD:-2.1}")
containerd_test=(${CONTAINERD_VERSIONS:-2.1 1.7 1.6})
containerd_bench=(${BENCH_CONTAINERD:-2.1 1.6})
# Tools newer than Debian 12 has, unpacked the same way (signature and artifact tests):
# trixie's cosign 2 (legacy signatures), sid's cosign 3 (Sigstore bundles), sid's oras.
newer_tools_test=(cosign-2 cosign-3 oras)

[ $# -ge 1 ] || die "usage: $0 PURPOSE... (build demo test bench all)"
purposes=()
for p in "$@"; do
  case $p in
    all) purposes+=(build demo test bench) ;;
    build|demo|test|bench) purposes+=("$p") ;;
    *) die "unknown purpose '$p' (build demo test bench all)" ;;
  esac
done

want_pkgs=() want_containerd=()
for p in "${purposes[@]}"; do
  declare -n pk="pkgs_$p"
  want_pkgs+=("${pkgs_build[@]}" "${pk[@]}")
  if [ "$p" != build ]; then
    declare -n cv="containerd_$p"
    want_containerd+=("${cv[@]}")
  fi
  if [ "$p" = test ]; then
    want_containerd+=("${newer_tools_test[@]}")
  fi
done
mapfile -t want_pkgs < <(printf '%s\n' "${want_pkgs[@]}" | sort -u)
mapfile -t want_containerd < <(printf '%s\n' "${want_containerd[@]}" | awk 'NF && !seen[$0]++')

# Debian packages: one query for all of them.
missing=()
installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${want_pkgs[@]}" 2>/dev/null \
  | awk '$NF == "installed" {print $1}' || true)
for p in "${want_pkgs[@]}"; do
  grep -qx "$p" <<<"$installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing Debian packages ${missing[*]}; run as root or install them"
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # A stale package index is the usual reason an install fails; refresh it and retry once.
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
  for p in "${missing[@]}"; do log "installed $p"; done
fi
# docker-registry's package starts a registry on :5000 where an init system runs; the tests
# start their own on a free loopback port and need nothing from that one.

# Rustup targets.
command -v rustup >/dev/null || die "rustup not found: install a Rust toolchain with rustup first"
have_targets=$(rustup target list --installed)
for t in "${targets_build[@]}"; do
  if ! grep -qx "$t" <<<"$have_targets"; then
    rustup target add "$t" >&2
    log "installed rustup target $t"
  fi
done

# Private containerd binaries and newer tools (cached; a finished one is skipped).
if [ ${#want_containerd[@]} -gt 0 ]; then
  test/fetch-debian.sh "${want_containerd[@]}" 2> >(grep -v ': cached' >&2) >/dev/null
fi
