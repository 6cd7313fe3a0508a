#!/usr/bin/env bash
# `make demo`: wasmcell end to end on this machine, then everything cleaned up.
# Installs what it needs with scripts/setup.sh (Debian packages, rustup targets, a private
# containerd 2.1 from Debian's packages into ~/.cache/wasmcell), builds, starts a private containerd with the
# freshly built shim first on its PATH, imports the demo images and runs them with ctr.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

[ "$(id -u)" = 0 ] || { echo "make demo needs root (containerd, mounts, cgroups)" >&2; exit 1; }

say "installing what is missing"
scripts/setup.sh demo
CONTAINERD_DIR=$(test/fetch-debian.sh "${DEMO_CONTAINERD:-2.1}" | cut -d= -f2)
BIN="$CONTAINERD_DIR/usr/bin"

say "building wasmcell and the demo images"
export WASMCELL_OCI_OUT="$PWD/target/oci"
cargo build --locked -p wasmcell-shim -p wasmcell -p demo-app

say "starting a private containerd ($("$BIN/containerd" --version | awk '{print $3}'))"
D=$(mktemp -d /tmp/wcdemo.XXXXXX)
cleanup() {
  set +e
  if [ -S "$D/c.sock" ]; then
    for t in $("$BIN/ctr" --address "$D/c.sock" task ls -q 2>/dev/null); do
      "$BIN/ctr" --address "$D/c.sock" task kill -s SIGKILL "$t" >/dev/null 2>&1
      "$BIN/ctr" --address "$D/c.sock" task delete -f "$t" >/dev/null 2>&1
    done
  fi
  [ -f "$D/pid" ] && kill "$(cat "$D/pid")" 2>/dev/null && while kill -0 "$(cat "$D/pid")" 2>/dev/null; do sleep 0.1; done
  pkill -9 -f "$D" 2>/dev/null
  grep -o " $D[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$D"
  echo "stopped containerd and removed $D"
}
trap cleanup EXIT
cat > "$D/config.toml" <<TOML
version = 3
root = "$D/root"
state = "$D/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",
  "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.grpc.v1.sandbox-controllers",
  "io.containerd.nri.v1.nri"]
[grpc]
  address = "$D/c.sock"
[ttrpc]
  address = "$D/c.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$D/opt"
TOML
PATH="$PWD/target/debug:$PATH" WASMCELL_CACHE_DIR="$D/cache" \
  "$BIN/containerd" --config "$D/config.toml" >"$D/containerd.log" 2>&1 &
echo $! >"$D/pid"
ctr() { "$BIN/ctr" --address "$D/c.sock" "$@"; }
until ctr version >/dev/null 2>&1; do sleep 0.05; done
RT=(--runtime io.containerd.wasmcell.v1 --platform wasip2/wasm)

say "importing the demo images"
run ctr image import --all-platforms target/oci/demo-app-image.tar
run ctr image import --all-platforms target/oci/demo-app-wasm-layer.tar

say "echo, from the classic image (first run compiles, later runs use the cache)"
run ctr run --rm "${RT[@]}" localhost/wasmcell/demo-app:latest demo-echo /demo-app.wasm echo hello from wasmcell
say "echo, from the wasm-layer image"
run ctr run --rm "${RT[@]}" localhost/wasmcell/demo-app-wasm-layer:latest demo-layer demo-app.wasm echo hello from a wasm layer
say "exit code"
set +e; ctr run --rm "${RT[@]}" localhost/wasmcell/demo-app:latest demo-exit /demo-app.wasm exit 7; code=$?; set -e
echo "ctr run ... exit 7 returned $code"
say "a daemon, then SIGTERM"
run ctr run -d "${RT[@]}" localhost/wasmcell/demo-app:latest demo-daemon /demo-app.wasm daemon
sleep 2
run ctr task ls
run ctr task kill demo-daemon
until ctr task ls | grep -q "demo-daemon.*STOPPED"; do sleep 0.05; done
run ctr task ls
run ctr task delete demo-daemon || true
run ctr container delete demo-daemon
say "serving HTTP: demo-http, a wasi:http/proxy component, one instance per request"
run ctr image import --all-platforms target/oci/demo-http-image.tar
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run ctr run -d --net-host --env "WASMCELL_HTTP_ADDR=127.0.0.1:$PORT" "${RT[@]}" \
  localhost/wasmcell/demo-http:latest demo-http /demo-http.wasm
until curl -s -o /dev/null "http://127.0.0.1:$PORT/"; do sleep 0.05; done
run curl -s "http://127.0.0.1:$PORT/"
run curl -s -X POST --data 'echoed by a fresh instance' "http://127.0.0.1:$PORT/echo"; echo
run curl -s -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$PORT/status/418"
run curl -s -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$PORT/trap"
run curl -s "http://127.0.0.1:$PORT/"
run ctr task kill demo-http
until ctr task ls | grep -q "demo-http.*STOPPED"; do sleep 0.05; done
run ctr task delete demo-http || true
run ctr container delete demo-http

say "done: wasmcell ran the demo under containerd"
